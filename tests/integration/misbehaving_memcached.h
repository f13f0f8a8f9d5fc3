// A misbehaving memcached for integrity tests: a proxy on a free loopback port
// in front of a real memcached (a MemcachedServer) that forwards every request
// and, when armed, damages answers in one exact, repeatable way: duplicated,
// reordered, with exchanged opaque tokens or a wrong key, followed by an
// unsolicited value, garbled, announcing an impossible length, trickled, cut
// off mid-value, or dropped. A test arms a fault, drives the client, and
// asserts exactly what the client made of it.
//
// It is the referee of the client's integrity checks, so it shares no code
// with tiercache: it frames requests and answers itself, only as strictly as
// finding where each one ends requires.
//
// How it works. One accept thread; per client connection one thread with its
// own upstream connection to the real memcached. The client may pipeline;
// requests are handled one at a time, in order: the request goes upstream
// followed by "mn\r\n", and upstream's bytes before the "MN\r\n" answering that
// mn are the request's answer (empty for a quiet success). A request that is
// itself "mn" is forwarded alone and its answer is the "MN\r\n". The answer
// then gets the armed fault, or goes to the client unchanged.
//
// Which answers get the fault: the arming's command equals the request's
// command (an empty command matches every request except "mn", which must be
// named), its count is not used up, and the answer is not empty (kSilent: any
// matching request counts). kWrongKey needs a k token in the answer and
// kSwapOpaque an O token; answers without one pass unchanged and uncounted.
// A copy (kDuplicateAnswer), held answer (kSwapOrder, kSwapOpaque) or stray
// (kUnsolicited) waiting on a connection is that connection's "deferred
// write"; while one waits, no new fault is applied on the connection, and the
// answer that releases a copy or held answer is written unchanged. So with
// count 2, pipelined answers A B C D become A A B C C D, B A D C, and so on.
//
// Deterministic: no randomness, and the only timing is the documented delays
// (1 ms between trickled bytes; 20 ms, 100 ms and Arming::copy_idle before a
// deferred write is released on an idle connection). Every wait also watches a stop pipe, so the
// destructor ends every thread promptly, even with memcached paused.

#ifndef TIERCACHE_TESTS_INTEGRATION_MISBEHAVING_MEMCACHED_H_
#define TIERCACHE_TESTS_INTEGRATION_MISBEHAVING_MEMCACHED_H_

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace tiercache::testing {

namespace misbehaving_internal {

using Clock = std::chrono::steady_clock;

[[noreturn]] inline void Fail(const char* what) {
  std::perror(what);
  std::abort();
}

// memcached splits request and response lines on spaces only.
inline std::vector<std::string_view> Tokens(std::string_view line) {
  std::vector<std::string_view> tokens;
  size_t pos = 0;
  while (pos < line.size()) {
    const size_t space = std::min(line.find(' ', pos), line.size());
    if (space > pos) tokens.push_back(line.substr(pos, space - pos));
    pos = space + 1;
  }
  return tokens;
}

// The line starting at `pos` whose '\n' is at `eol`, without "\r\n".
inline std::string_view LineAt(std::string_view bytes, size_t pos, size_t eol) {
  std::string_view line = bytes.substr(pos, eol - pos);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

// A data length: decimal digits only, at most 2^32 - 1 (memcached's own limit
// is far lower; anything else is not a length and frames no data block).
inline std::optional<size_t> ParseLength(std::string_view token) {
  if (token.empty() || token.size() > 10) return std::nullopt;
  uint64_t value = 0;
  for (const char c : token) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value > UINT32_MAX) return std::nullopt;
  return static_cast<size_t>(value);
}

// One client request, exactly as sent.
struct Request {
  std::string bytes;    // the line, and for storage commands the data block
  std::string command;  // first token: "mg", "ms", ..., "get"; empty for a blank line
  std::string opaque;   // the value of its O flag (meta commands), or empty
};

// Takes the first complete request off the front of `buffer`; nullopt while
// more bytes are needed. Storage commands carry a data block of the announced
// length plus "\r\n" (forwarded as is, even when malformed: memcached judges).
inline std::optional<Request> TakeRequest(std::string& buffer) {
  const size_t eol = buffer.find('\n');
  if (eol == std::string::npos) return std::nullopt;
  const std::vector<std::string_view> tokens = Tokens(LineAt(buffer, 0, eol));
  const std::string_view command = tokens.empty() ? std::string_view() : tokens[0];
  size_t length_index = 0;  // which token announces the data block
  if (command == "ms") {
    length_index = 2;  // ms <key> <datalen> <flags>*
  } else if (command == "set" || command == "add" || command == "replace" || command == "append" ||
             command == "prepend" || command == "cas") {
    length_index = 4;  // set <key> <flags> <exptime> <bytes> ...
  }
  size_t end = eol + 1;
  if (length_index != 0 && tokens.size() > length_index) {
    if (const std::optional<size_t> length = ParseLength(tokens[length_index])) {
      end += *length + 2;
    }
  }
  if (buffer.size() < end) return std::nullopt;
  Request request;
  request.command = std::string(command);
  // Flags follow the key (and the length of ms); mn has no key.
  size_t first_flag = tokens.size();
  if (command == "mn") {
    first_flag = 1;
  } else if (command == "ms") {
    first_flag = 3;
  } else if (command.size() == 2 && command[0] == 'm') {
    first_flag = 2;
  }
  for (size_t i = first_flag; i < tokens.size(); ++i) {
    if (tokens[i][0] == 'O') request.opaque = std::string(tokens[i].substr(1));
  }
  request.bytes = buffer.substr(0, end);
  buffer.erase(0, end);
  return request;
}

// memcached closes a connection whose request line has no newline within 2048
// bytes (multi-key "get"/"gets" lines excepted: it reads those key by key).
inline bool UnterminatedLineTooLong(std::string_view buffer) {
  if (buffer.find('\n') != std::string_view::npos) return false;
  const bool get = buffer.substr(0, 4) == "get " || buffer.substr(0, 5) == "gets ";
  return buffer.size() > (get ? size_t{1} << 20 : size_t{2048});
}

// The end of the response starting at `pos` in upstream's bytes; nullopt while
// more bytes are needed. "VA <len> ..." (meta) and "VALUE <key> <flags> <len>"
// (text) are followed by <len> bytes and "\r\n"; every other response is a line.
inline std::optional<size_t> ResponseEnd(std::string_view bytes, size_t pos) {
  const size_t eol = bytes.find('\n', pos);
  if (eol == std::string_view::npos) return std::nullopt;
  const std::vector<std::string_view> tokens = Tokens(LineAt(bytes, pos, eol));
  size_t length_index = 0;
  if (!tokens.empty() && tokens[0] == "VA") length_index = 1;
  if (!tokens.empty() && tokens[0] == "VALUE") length_index = 3;
  size_t end = eol + 1;
  if (length_index != 0 && tokens.size() > length_index) {
    if (const std::optional<size_t> length = ParseLength(tokens[length_index])) {
      end += *length + 2;
    }
  }
  if (end > bytes.size()) return std::nullopt;
  return end;
}

// Where the flags of a response line start: after "VA <len>", after any other
// two-letter meta code ("HD", "EN", "NF", "MN", ...); lines such as "ERROR",
// "CLIENT_ERROR ...", "VALUE ..." or "END" have none.
inline size_t FirstResponseFlag(const std::vector<std::string_view>& tokens) {
  if (tokens.empty()) return 0;
  if (tokens[0] == "VA") return 2;
  const std::string_view code = tokens[0];
  if (code.size() == 2 && code[0] >= 'A' && code[0] <= 'Z' && code[1] >= 'A' && code[1] <= 'Z') {
    return 1;
  }
  return tokens.size();
}

// The value of the first `flag` token in the answer's response lines. The
// key of a classic "VALUE <key> ..." line counts as its `k`.
inline std::optional<std::string> FindFlag(std::string_view answer, char flag) {
  for (size_t pos = 0; pos < answer.size();) {
    const std::optional<size_t> end = ResponseEnd(answer, pos);
    if (!end) break;
    const std::vector<std::string_view> tokens =
        Tokens(LineAt(answer, pos, answer.find('\n', pos)));
    if (flag == 'k' && tokens.size() > 1 && tokens[0] == "VALUE") return std::string(tokens[1]);
    for (size_t i = FirstResponseFlag(tokens); i < tokens.size(); ++i) {
      if (tokens[i][0] == flag) return std::string(tokens[i].substr(1));
    }
    pos = *end;
  }
  return std::nullopt;
}

// The answer with the value of every `flag` token replaced by `value` (for
// 'k', also the key of every classic VALUE line); the rest of each response
// (data blocks included) is unchanged.
inline std::string ReplaceFlag(std::string_view answer, char flag, std::string_view value) {
  std::string out;
  size_t pos = 0;
  while (pos < answer.size()) {
    const std::optional<size_t> end = ResponseEnd(answer, pos);
    if (!end) break;
    const size_t eol = answer.find('\n', pos);
    const std::vector<std::string_view> tokens = Tokens(LineAt(answer, pos, eol));
    const size_t first_flag = FirstResponseFlag(tokens);
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) out += ' ';
      if (flag == 'k' && i == 1 && tokens[0] == "VALUE") {
        out += value;
      } else if (i >= first_flag && tokens[i][0] == flag) {
        out += flag;
        out += value;
      } else {
        out += tokens[i];
      }
    }
    out += "\r\n";
    out += answer.substr(eol + 1, *end - eol - 1);
    pos = *end;
  }
  out += answer.substr(pos);
  return out;
}

// Every write leaves at once: a trickled byte is not batched with the next
// (Nagle), and a short answer is not held for a delayed ACK.
inline void SetNoDelay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Polls `fds` (fds[0] is the stop pipe) until one is ready or `deadline`
// passes; false on timeout. A failing poll reports the stop pipe ready.
inline bool PollUntil(pollfd* fds, nfds_t count, std::optional<Clock::time_point> deadline) {
  while (true) {
    int timeout_ms = -1;
    if (deadline) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now());
      timeout_ms = static_cast<int>(std::max<int64_t>(0, left.count()));
    }
    for (nfds_t i = 0; i < count; ++i) fds[i].revents = 0;
    const int ready = ::poll(fds, count, timeout_ms);
    if (ready > 0) return true;
    if (ready == 0) return false;
    if (errno != EINTR) {
      fds[0].revents = POLLERR;
      return true;
    }
  }
}

}  // namespace misbehaving_internal

class MisbehavingMemcached {
 public:
  enum class Fault {
    kNone,
    // The answer is written normally, and written again immediately before
    // the next answer on the connection; if no request arrives within
    // Arming::copy_idle (50 ms unless set), the copy is written then (it
    // lands on an idle connection).
    kDuplicateAnswer,
    // The answer is held back and written right after the next non-empty
    // answer on the connection; if none comes within 100 ms, it is written.
    kSwapOrder,
    // The answer is held back; the next non-empty answer on the connection
    // and it exchange O tokens and are written in their own order (unchanged
    // if that answer has no O token, or if none comes within 100 ms).
    kSwapOpaque,
    // The k<key> token becomes k<wrong_key> (no change to a b flag).
    kWrongKey,
    // The answer is written normally; once the connection has then been idle
    // for 20 ms, "VA 5 k<wrong_key> O<token>\r\nstray\r\n" is written, with
    // the O token of the connection's latest request that had one (no O
    // token if none had). A request before then restarts the 20 ms.
    kUnsolicited,
    // The answer is replaced by "\x01\xffgarbage \x7f\r\n".
    kGarbage,
    // The answer is replaced by "VA 4294967296 O<its token>\r\n" and nothing
    // more (no O token if it had none); later requests are answered normally.
    kHugeLength,
    // The answer is written one byte at a time, 1 ms apart: valid, just slow.
    kTrickle,
    // The first half of the answer's bytes is written, then the client
    // connection is closed.
    kCloseMidValue,
    // The request is forwarded but nothing is written for its answer.
    kSilent,
    // The answer is replaced by Arming::replacement (an error line, an MN,
    // an answer of the wrong kind, ...).
    kReplace,
  };

  struct Arming {
    Fault fault = Fault::kNone;
    std::string command;  // "mg", "ms", "md", "ma", "mn", ...; empty: any request but "mn"
    int count = 1;        // how many matching requests get the fault (then it behaves)
    std::string wrong_key = "otherkey";  // for kWrongKey and kUnsolicited
    std::string replacement;             // for kReplace
    // kDuplicateAnswer: how long the copy waits for the next answer before it
    // is written on the idle connection. A test that needs the copy in front
    // of the next answer sets it long: a sanitized, busy machine can stall a
    // client 50 ms between two calls.
    std::chrono::milliseconds copy_idle{50};
  };

  // `upstream_address`: "127.0.0.1:<port>" (a numeric IPv4 address) or a unix
  // socket path, as MemcachedServer::address() gives. Aborts if it cannot
  // listen; a client whose upstream connection fails is closed at once.
  explicit MisbehavingMemcached(std::string upstream_address)
      : upstream_address_(std::move(upstream_address)) {
    int stop_pipe[2];
    if (::pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) misbehaving_internal::Fail("pipe2");
    stop_read_fd_ = stop_pipe[0];
    stop_write_fd_ = stop_pipe[1];
    // Port 0 and getsockname(), as MemcachedServer::FreePort() does, but the
    // bound socket is kept: no window in which another process takes the port.
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) misbehaving_internal::Fail("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t size = sizeof(addr);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listen_fd_, SOMAXCONN) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &size) != 0) {
      misbehaving_internal::Fail("listen on 127.0.0.1");
    }
    address_ = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }

  // Stops the listener and every connection (held answers are dropped) and
  // joins every thread; bounded even while memcached is paused.
  ~MisbehavingMemcached() {
    // One byte, never read: the stop pipe stays readable for every poll.
    const char byte = 0;
    while (::write(stop_write_fd_, &byte, 1) < 0 && errno == EINTR) {
    }
    accept_thread_.join();
    // The accept thread has ended, so connection_threads_ no longer changes.
    for (std::thread& thread : connection_threads_) thread.join();
    ::close(listen_fd_);
    ::close(stop_read_fd_);
    ::close(stop_write_fd_);
  }

  MisbehavingMemcached(const MisbehavingMemcached&) = delete;
  MisbehavingMemcached& operator=(const MisbehavingMemcached&) = delete;

  // "127.0.0.1:<port>": what MemcachedOptions::servers takes.
  const std::string& address() const { return address_; }

  // Replaces any previous arming; answers already deferred are unaffected.
  void Arm(Arming arming) {
    std::lock_guard<std::mutex> hold(mu_);
    arming_ = std::move(arming);
  }
  void Disarm() { Arm(Arming{}); }

  // The O token of every request received so far, with the number of the
  // client connection (in order of acceptance, from 0) it came on.
  std::vector<std::pair<int, std::string>> tokens() const {
    std::lock_guard<std::mutex> hold(mu_);
    return tokens_;
  }

  // Requests that received a fault so far (over every arming).
  int faults_applied() const {
    std::lock_guard<std::mutex> hold(mu_);
    return faults_applied_;
  }
  // Client connections accepted so far: a client that replaced a connection
  // shows up here.
  int connections_accepted() const {
    std::lock_guard<std::mutex> hold(mu_);
    return connections_accepted_;
  }
  // Until faults_applied() >= n (true) or the timeout passes (false).
  bool WaitForFaults(int n, std::chrono::milliseconds timeout) const {
    std::unique_lock<std::mutex> hold(mu_);
    return cv_.wait_for(hold, timeout, [&] { return faults_applied_ >= n; });
  }
  // Until n kDuplicateAnswer copies or kUnsolicited strays have been written
  // on an idle connection (true), or the timeout passes (false).
  bool WaitForStrayWritten(int n, std::chrono::milliseconds timeout) const {
    std::unique_lock<std::mutex> hold(mu_);
    return cv_.wait_for(hold, timeout, [&] { return strays_written_ >= n; });
  }

 private:
  using Clock = misbehaving_internal::Clock;
  using Request = misbehaving_internal::Request;

  static constexpr std::chrono::milliseconds kHoldLimit{100};  // kSwapOrder, kSwapOpaque
  static constexpr std::chrono::milliseconds kStrayIdle{20};   // kUnsolicited
  static constexpr std::chrono::milliseconds kTrickleGap{1};   // kTrickle

  // What a connection still owes its client: a copy, a held answer or a stray
  // (the "deferred write" of the header comment). At most one per connection.
  struct Deferred {
    enum class Kind { kNone, kCopy, kHeld, kHeldForOpaque, kStray };
    Kind kind = Kind::kNone;
    std::string answer;          // kCopy, kHeld, kHeldForOpaque
    std::string wrong_key;       // kStray
    Clock::time_point deadline;  // written then if the connection is still idle
  };

  // One client connection and its own upstream connection, served on one
  // thread that owns both descriptors.
  class Session {
   public:
    Session(MisbehavingMemcached& proxy, int client_fd, int id)
        : proxy_(proxy), client_fd_(client_fd), id_(id) {}
    ~Session() {
      ::close(client_fd_);
      if (upstream_fd_ >= 0) ::close(upstream_fd_);
    }
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Returns when either side closes, on a fault that closes, or on stop.
    void Run() {
      if (!ConnectUpstream()) return;
      while (true) {
        if (std::optional<Request> request = misbehaving_internal::TakeRequest(client_in_)) {
          if (!Handle(*request)) return;
          continue;
        }
        if (misbehaving_internal::UnterminatedLineTooLong(client_in_)) return;
        std::optional<Clock::time_point> deadline;
        if (deferred_.kind != Deferred::Kind::kNone) {
          if (Clock::now() >= deferred_.deadline) {
            if (!ReleaseDeferred()) return;
            continue;
          }
          deadline = deferred_.deadline;
        }
        pollfd fds[3] = {
            {proxy_.stop_read_fd_, POLLIN, 0}, {client_fd_, POLLIN, 0}, {upstream_fd_, POLLIN, 0}};
        if (!misbehaving_internal::PollUntil(fds, 3, deadline)) continue;  // deadline passed
        if (fds[0].revents != 0) return;
        // memcached speaks only when asked: an idle upstream that turns readable has closed.
        if (fds[2].revents != 0) return;
        if (fds[1].revents != 0 && !Receive(client_fd_, client_in_)) return;
      }
    }

   private:
    bool ConnectUpstream() {
      const std::string& address = proxy_.upstream_address_;
      sockaddr_storage storage{};
      socklen_t size = 0;
      const size_t colon = address.rfind(':');
      if (address.find('/') == std::string::npos && colon != std::string::npos) {
        auto* addr = reinterpret_cast<sockaddr_in*>(&storage);
        addr->sin_family = AF_INET;
        const std::string host = address.substr(0, colon);
        const std::optional<size_t> port =
            misbehaving_internal::ParseLength(std::string_view(address).substr(colon + 1));
        if (::inet_pton(AF_INET, host.c_str(), &addr->sin_addr) != 1 || !port || *port > 65535) {
          return false;
        }
        addr->sin_port = htons(static_cast<uint16_t>(*port));
        size = sizeof(sockaddr_in);
      } else {
        auto* addr = reinterpret_cast<sockaddr_un*>(&storage);
        addr->sun_family = AF_UNIX;
        if (address.size() >= sizeof(addr->sun_path)) return false;
        address.copy(addr->sun_path, sizeof(addr->sun_path) - 1);
        size = sizeof(sockaddr_un);
      }
      upstream_fd_ = ::socket(storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (upstream_fd_ < 0) return false;
      if (storage.ss_family == AF_INET) misbehaving_internal::SetNoDelay(upstream_fd_);
      if (::connect(upstream_fd_, reinterpret_cast<sockaddr*>(&storage), size) == 0) return true;
      if (errno != EINPROGRESS && errno != EINTR) return false;
      pollfd fds[2] = {{proxy_.stop_read_fd_, POLLIN, 0}, {upstream_fd_, POLLOUT, 0}};
      misbehaving_internal::PollUntil(fds, 2, std::nullopt);
      if (fds[0].revents != 0) return false;
      int error = 0;
      socklen_t error_size = sizeof(error);
      return ::getsockopt(upstream_fd_, SOL_SOCKET, SO_ERROR, &error, &error_size) == 0 &&
             error == 0;
    }

    bool Handle(const Request& request) {
      const bool is_mn = request.command == "mn";
      if (!Send(upstream_fd_, is_mn ? request.bytes : request.bytes + "mn\r\n")) return false;
      std::string answer;
      if (!ReadAnswer(is_mn, answer)) return false;
      if (!request.opaque.empty()) {
        last_opaque_ = request.opaque;
        proxy_.RecordToken(id_, request.opaque);
      }
      return Deliver(request, answer);
    }

    // Upstream's answer to one request: everything before the "MN\r\n" that
    // answers the added mn; for the client's own mn, that "MN\r\n" itself.
    bool ReadAnswer(bool is_mn, std::string& answer) {
      size_t pos = 0;  // the responses before pos are complete, and none is the MN
      while (true) {
        while (const std::optional<size_t> end =
                   misbehaving_internal::ResponseEnd(upstream_in_, pos)) {
          if (misbehaving_internal::LineAt(upstream_in_, pos, upstream_in_.find('\n', pos)) ==
              "MN") {
            answer = upstream_in_.substr(0, is_mn ? *end : pos);
            upstream_in_.erase(0, *end);
            return true;
          }
          pos = *end;
        }
        pollfd fds[2] = {{proxy_.stop_read_fd_, POLLIN, 0}, {upstream_fd_, POLLIN, 0}};
        misbehaving_internal::PollUntil(fds, 2, std::nullopt);
        if (fds[0].revents != 0) return false;
        if (!Receive(upstream_fd_, upstream_in_)) {
          // memcached closed ("quit", a fatal error): pass on what it said first.
          Send(client_fd_, upstream_in_);
          return false;
        }
      }
    }

    // Writes the answer to one request, faulted or not; false closes the connection.
    bool Deliver(const Request& request, const std::string& answer) {
      using Kind = Deferred::Kind;
      switch (deferred_.kind) {
        case Kind::kCopy:
          return Send(client_fd_, std::exchange(deferred_, Deferred{}).answer + answer);
        case Kind::kHeld:
        case Kind::kHeldForOpaque: {
          if (answer.empty()) return true;  // held until a non-empty answer
          const Deferred held = std::exchange(deferred_, Deferred{});
          if (held.kind == Kind::kHeld) return Send(client_fd_, answer + held.answer);
          return Send(client_fd_, ExchangeOpaque(held.answer, answer));
        }
        case Kind::kStray:
          deferred_.deadline = Clock::now() + kStrayIdle;  // not idle yet
          return Send(client_fd_, answer);
        case Kind::kNone:
          break;
      }
      const std::optional<Arming> fault = proxy_.TakeFault(request, answer);
      if (!fault) return Send(client_fd_, answer);
      switch (fault->fault) {
        case Fault::kNone:  // TakeFault never returns it
          return Send(client_fd_, answer);
        case Fault::kDuplicateAnswer:
          if (!Send(client_fd_, answer)) return false;
          deferred_ = {Kind::kCopy, answer, "", Clock::now() + fault->copy_idle};
          return true;
        case Fault::kSwapOrder:
          deferred_ = {Kind::kHeld, answer, "", Clock::now() + kHoldLimit};
          return true;
        case Fault::kSwapOpaque:
          deferred_ = {Kind::kHeldForOpaque, answer, "", Clock::now() + kHoldLimit};
          return true;
        case Fault::kWrongKey:
          return Send(client_fd_, misbehaving_internal::ReplaceFlag(answer, 'k', fault->wrong_key));
        case Fault::kUnsolicited:
          if (!Send(client_fd_, answer)) return false;
          deferred_ = {Kind::kStray, "", fault->wrong_key, Clock::now() + kStrayIdle};
          return true;
        case Fault::kGarbage:
          return Send(client_fd_, "\x01\xffgarbage \x7f\r\n");
        case Fault::kReplace:
          return Send(client_fd_, fault->replacement);
        case Fault::kHugeLength: {
          const std::optional<std::string> opaque = misbehaving_internal::FindFlag(answer, 'O');
          return Send(client_fd_, "VA 4294967296" + (opaque ? " O" + *opaque : "") + "\r\n");
        }
        case Fault::kTrickle:
          return Trickle(answer);
        case Fault::kCloseMidValue:
          Send(client_fd_, std::string_view(answer).substr(0, answer.size() / 2));
          ::shutdown(client_fd_, SHUT_WR);  // EOF right after the half
          return false;
        case Fault::kSilent:
          return true;
      }
      return false;
    }

    // The deferred write, due now on an idle connection.
    bool ReleaseDeferred() {
      const Deferred deferred = std::exchange(deferred_, Deferred{});
      switch (deferred.kind) {
        case Deferred::Kind::kCopy:
          if (!Send(client_fd_, deferred.answer)) return false;
          proxy_.CountStray();
          return true;
        case Deferred::Kind::kHeld:
        case Deferred::Kind::kHeldForOpaque:
          return Send(client_fd_, deferred.answer);
        case Deferred::Kind::kStray: {
          std::string stray = "VA 5 k" + deferred.wrong_key;
          if (!last_opaque_.empty()) stray += " O" + last_opaque_;
          stray += "\r\nstray\r\n";
          if (!Send(client_fd_, stray)) return false;
          proxy_.CountStray();
          return true;
        }
        case Deferred::Kind::kNone:
          break;
      }
      return true;
    }

    // The held answer and the next one, in that order, with their O tokens
    // exchanged (the held one has one; both unchanged if the next has none).
    static std::string ExchangeOpaque(const std::string& held, const std::string& next) {
      const std::optional<std::string> held_opaque = misbehaving_internal::FindFlag(held, 'O');
      const std::optional<std::string> next_opaque = misbehaving_internal::FindFlag(next, 'O');
      if (!held_opaque || !next_opaque) return held + next;
      return misbehaving_internal::ReplaceFlag(held, 'O', *next_opaque) +
             misbehaving_internal::ReplaceFlag(next, 'O', *held_opaque);
    }

    bool Trickle(std::string_view answer) {
      for (size_t i = 0; i < answer.size(); ++i) {
        if (i > 0) {
          pollfd stop[1] = {{proxy_.stop_read_fd_, POLLIN, 0}};
          if (misbehaving_internal::PollUntil(stop, 1, Clock::now() + kTrickleGap)) return false;
        }
        if (!Send(client_fd_, answer.substr(i, 1))) return false;
      }
      return true;
    }

    // Appends what is there to read; false on EOF or error.
    static bool Receive(int fd, std::string& buffer) {
      char chunk[65536];
      while (true) {
        const ssize_t n = ::recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT);
        if (n > 0) {
          buffer.append(chunk, static_cast<size_t>(n));
          return true;
        }
        if (n == 0) return false;
        if (errno != EINTR) return errno == EAGAIN || errno == EWOULDBLOCK;
      }
    }

    // Writes all of `bytes` (waiting while the peer does not read); false if
    // the peer is gone or the proxy is stopping.
    bool Send(int fd, std::string_view bytes) {
      while (!bytes.empty()) {
        const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          bytes.remove_prefix(static_cast<size_t>(n));
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
        pollfd fds[2] = {{proxy_.stop_read_fd_, POLLIN, 0}, {fd, POLLOUT, 0}};
        misbehaving_internal::PollUntil(fds, 2, std::nullopt);
        if (fds[0].revents != 0) return false;
      }
      return true;
    }

    MisbehavingMemcached& proxy_;
    const int client_fd_;
    const int id_;  // the order in which the proxy accepted this connection, from 0
    int upstream_fd_ = -1;
    std::string client_in_;    // client bytes not yet framed into a request
    std::string upstream_in_;  // upstream bytes not yet framed into an answer
    std::string last_opaque_;  // of the latest request that had an O flag
    Deferred deferred_;
  };

  void AcceptLoop() {
    while (true) {
      pollfd fds[2] = {{stop_read_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
      misbehaving_internal::PollUntil(fds, 2, std::nullopt);
      if (fds[0].revents != 0) return;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) {
          continue;
        }
        return;  // out of descriptors, or worse: accept no more
      }
      misbehaving_internal::SetNoDelay(fd);
      int id = 0;
      {
        std::lock_guard<std::mutex> hold(mu_);
        id = connections_accepted_++;
      }
      connection_threads_.emplace_back([this, fd, id] { Session(*this, fd, id).Run(); });
    }
  }

  // The arming as it applies to this request and its answer, with its count
  // taken; nullopt when the answer is to pass unchanged.
  std::optional<Arming> TakeFault(const Request& request, std::string_view answer) {
    std::lock_guard<std::mutex> hold(mu_);
    const Fault fault = arming_.fault;
    if (fault == Fault::kNone || arming_.count <= 0) return std::nullopt;
    if (arming_.command.empty() ? request.command == "mn" : arming_.command != request.command) {
      return std::nullopt;
    }
    if (fault != Fault::kSilent && answer.empty()) return std::nullopt;
    if (fault == Fault::kWrongKey && !misbehaving_internal::FindFlag(answer, 'k')) {
      return std::nullopt;
    }
    if (fault == Fault::kSwapOpaque && !misbehaving_internal::FindFlag(answer, 'O')) {
      return std::nullopt;
    }
    --arming_.count;
    ++faults_applied_;
    cv_.notify_all();
    return arming_;
  }

  void RecordToken(int connection, const std::string& token) {
    std::lock_guard<std::mutex> hold(mu_);
    tokens_.emplace_back(connection, token);
  }

  void CountStray() {
    std::lock_guard<std::mutex> hold(mu_);
    ++strays_written_;
    cv_.notify_all();
  }

  const std::string upstream_address_;
  std::string address_;
  int listen_fd_ = -1;
  // Written once by the destructor and never read: readable from then on, it
  // wakes every poll of every thread.
  int stop_read_fd_ = -1;
  int stop_write_fd_ = -1;
  std::thread accept_thread_;
  // Only the accept thread adds; the destructor joins them after it.
  std::vector<std::thread> connection_threads_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;               // faults_applied_ or strays_written_ grew
  Arming arming_;                                    // guarded by mu_; count is what is left of it
  int faults_applied_ = 0;                           // guarded by mu_
  int connections_accepted_ = 0;                     // guarded by mu_
  std::vector<std::pair<int, std::string>> tokens_;  // guarded by mu_
  int strays_written_ = 0;                           // guarded by mu_
};

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_INTEGRATION_MISBEHAVING_MEMCACHED_H_
