// A private memcached for one test: Debian's real server, started on a free
// loopback port (or a unix socket in a temporary directory) and stopped by the
// destructor. Never port 11211, never a system service.

#ifndef TIERCACHE_TESTS_INTEGRATION_MEMCACHED_SERVER_H_
#define TIERCACHE_TESTS_INTEGRATION_MEMCACHED_SERVER_H_

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace tiercache::testing {

class MemcachedServer {
 public:
  struct Options {
    bool unix_socket = false;
    std::vector<std::string> extra_args;  // e.g. {"-I", "2m"}
    // Its stderr to /dev/null: memcached 1.6.18 with TLS reports every
    // accept4() EAGAIN there, which would garble the demo's output.
    bool quiet = false;
  };

  MemcachedServer() : MemcachedServer(Options{}) {}
  explicit MemcachedServer(Options options) : options_(std::move(options)) {
    if (options_.unix_socket) {
      char dir[] = "/tmp/tiercache-memcached-XXXXXX";
      if (::mkdtemp(dir) == nullptr) std::abort();
      socket_dir_ = dir;
      address_ = socket_dir_ + "/memcached.sock";
    }
    for (int attempt = 0; attempt < 5 && pid_ <= 0; ++attempt) {
      if (!options_.unix_socket) {
        port_ = FreePort();
        address_ = "127.0.0.1:" + std::to_string(port_);
      }
      Start();
    }
  }

  ~MemcachedServer() {
    Stop();
    if (!socket_dir_.empty()) {
      ::unlink(address_.c_str());
      ::rmdir(socket_dir_.c_str());
    }
  }

  // "127.0.0.1:<port>" or the socket path: what MemcachedOptions::servers takes.
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  bool running() const { return pid_ > 0; }
  // The server process (benchmarks pin it to a CPU); -1 when not running.
  pid_t pid() const { return pid_; }

  // Starts memcached on the same address; returns once it accepts connections.
  void Start() {
    if (pid_ > 0) return;
    std::vector<std::string> args = {"memcached", "-U", "0", "-t", "2", "-m", "64"};
    if (::geteuid() == 0) args.insert(args.end(), {"-u", "root"});
    if (options_.unix_socket) {
      ::unlink(address_.c_str());
      args.insert(args.end(), {"-s", address_});
    } else {
      args.insert(args.end(), {"-l", "127.0.0.1", "-p", std::to_string(port_)});
    }
    args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) {
      // Dies with the test (the thread that started it): a test that crashes
      // (a sanitizer report) must not leave a server behind holding its
      // output pipe, which ctest would wait on until its timeout.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);  // the test died before prctl
      if (options_.quiet) {
        const int null = ::open("/dev/null", O_WRONLY);
        if (null >= 0) {
          ::dup2(null, STDERR_FILENO);
          ::close(null);
        }
      }
      std::vector<char*> argv;
      for (std::string& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      ::execvp("memcached", argv.data());
      std::perror("exec memcached");
      ::_exit(127);
    }
    pid_ = pid;
    // Bounded wait for the server to accept connections.
    for (int i = 0; i < 500; ++i) {
      if (Accepting()) return;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {  // exited: port taken?
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    Stop();
  }

  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  // SIGSTOP / SIGCONT: a server that accepts bytes but never answers.
  // Returns once every thread of memcached has stopped: kill() only queues
  // the signal, and a worker thread still running could answer one more
  // request. The parent learns of the stop (WUNTRACED) only when the whole
  // thread group has stopped.
  void Pause() {
    ::kill(pid_, SIGSTOP);
    int status = 0;
    while (::waitpid(pid_, &status, WUNTRACED) == pid_ && !WIFSTOPPED(status)) {
    }
  }
  void Resume() { ::kill(pid_, SIGCONT); }

 private:
  static int FreePort() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    socklen_t size = sizeof(addr);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &size);
    ::close(fd);
    return ntohs(addr.sin_port);
  }

  bool Accepting() const {
    int fd;
    int rc;
    if (options_.unix_socket) {
      fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      address_.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
      rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    } else {
      fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(static_cast<uint16_t>(port_));
      rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    }
    ::close(fd);
    return rc == 0;
  }

  Options options_;
  std::string socket_dir_;
  std::string address_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_INTEGRATION_MEMCACHED_SERVER_H_
