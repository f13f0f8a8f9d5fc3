// A replica process for multi-process tests: tests/integration/replica_main.cc
// started with posix_spawn, talked to over pipes, one command line in, one
// answer line out. Every read is bounded (a hung replica fails the test, it
// does not hang it); the destructor kills the process.

#ifndef TIERCACHE_TESTS_INTEGRATION_REPLICA_PROCESS_H_
#define TIERCACHE_TESTS_INTEGRATION_REPLICA_PROCESS_H_

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace tiercache::testing {

class ReplicaProcess {
 public:
  explicit ReplicaProcess(std::vector<std::string> args) {
    ::signal(SIGPIPE, SIG_IGN);  // a dead replica fails its test, not the test binary
    int to_child[2];
    int from_child[2];
    if (::pipe(to_child) != 0 || ::pipe(from_child) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_child[0], 0);
    posix_spawn_file_actions_adddup2(&actions, from_child[1], 1);
    posix_spawn_file_actions_addclose(&actions, to_child[1]);
    posix_spawn_file_actions_addclose(&actions, from_child[0]);
    args.insert(args.begin(), TIERCACHE_REPLICA_BINARY);
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    ::close(to_child[0]);
    ::close(from_child[1]);
    in_ = to_child[1];
    out_ = from_child[0];
  }

  ~ReplicaProcess() {
    if (in_ >= 0) ::close(in_);
    if (out_ >= 0) ::close(out_);
    Kill();
  }

  bool running() const { return pid_ > 0; }

  void Send(const std::string& command) {
    const std::string line = command + "\n";
    if (::write(in_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      Kill();
    }
  }

  // The next answer line, or "timeout" / "eof" after `timeout`.
  std::string ReadLine(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      if (size_t nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "timeout";
      pollfd fd{out_, POLLIN, 0};
      if (::poll(&fd, 1, static_cast<int>(left.count())) <= 0) continue;
      char chunk[4096];
      const ssize_t n = ::read(out_, chunk, sizeof(chunk));
      if (n <= 0) return "eof";
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  std::string Call(const std::string& command) {
    Send(command);
    return ReadLine();
  }

  // "stats a=1 b=2" as a map.
  std::map<std::string, uint64_t> Stats() {
    std::map<std::string, uint64_t> stats;
    const std::vector<std::string> fields = absl::StrSplit(Call("stats"), ' ');
    for (const std::string& field : fields) {
      std::vector<std::string> pair = absl::StrSplit(field, '=');
      uint64_t value = 0;
      if (pair.size() == 2 && absl::SimpleAtoi(pair[1], &value)) {
        stats[std::string(pair[0])] = value;
      }
    }
    return stats;
  }

  void Kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  // Asks the replica to quit (it flushes its queue) and waits for it.
  // Bounded: a replica that does not exit within 30 s is killed.
  void Quit() {
    Send("quit");
    for (int i = 0; i < 3000 && pid_ > 0; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) pid_ = -1;
      if (pid_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    Kill();
  }

 private:
  pid_t pid_ = -1;
  int in_ = -1;
  int out_ = -1;
  std::string buffer_;
};

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_INTEGRATION_REPLICA_PROCESS_H_
