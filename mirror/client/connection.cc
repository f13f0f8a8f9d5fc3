#include "client/connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"

namespace tiercache::mirror_internal {
namespace {

constexpr size_t kReadChunk = 64 * 1024;

std::string ErrnoText(int error) { return std::strerror(error); }

// How long a reader over TLS waits in silence before it kicks the session
// (TlsStream::Kick). Short: each kick lets memcached read one more record.
constexpr absl::Duration kTlsKickInterval = absl::Microseconds(500);

// The time left until `deadline` for ppoll(): to the microsecond (a TLS
// reader waits slices well under a millisecond), never negative.
timespec PollTimeout(absl::Time deadline) {
  const absl::Duration left = std::max(deadline - absl::Now(), absl::ZeroDuration());
  return absl::ToTimespec(std::min(left, absl::Hours(24)));
}

// Waits until `fd` is ready for `events` or the deadline passes. Returns the
// revents, 0 on timeout, -1 on error (errno set).
int WaitFor(int fd, short events, absl::Time deadline) {
  while (true) {
    pollfd p{fd, events, 0};
    const timespec timeout = PollTimeout(deadline);
    const int n = ::ppoll(&p, 1, &timeout, nullptr);
    if (n > 0) return p.revents;
    if (n == 0) return 0;
    if (errno != EINTR) return -1;
  }
}

absl::StatusOr<int> ConnectSocket(const Endpoint& endpoint, absl::Time deadline) {
  addrinfo* resolved = nullptr;
  sockaddr_storage address{};
  socklen_t address_size = 0;
  int family = AF_UNIX;
  if (endpoint.is_unix) {
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::memcpy(un.sun_path, endpoint.host.data(), endpoint.host.size());
    std::memcpy(&address, &un, sizeof(un));
    address_size = sizeof(un);
  } else {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    const std::string port = std::to_string(endpoint.port);
    const int error = ::getaddrinfo(endpoint.host.c_str(), port.c_str(), &hints, &resolved);
    if (error != 0) {
      return absl::UnavailableError(
          absl::StrFormat("cannot resolve %s: %s", endpoint.name, ::gai_strerror(error)));
    }
    std::memcpy(&address, resolved->ai_addr, resolved->ai_addrlen);
    address_size = resolved->ai_addrlen;
    family = resolved->ai_family;
    ::freeaddrinfo(resolved);
  }
  const int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError("socket(): " + ErrnoText(errno));
  if (!endpoint.is_unix) {
    const int one = 1;  // requests are small and latency-bound: no Nagle delay
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), address_size) != 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) {
      const int error = errno;
      ::close(fd);
      return absl::UnavailableError(
          absl::StrFormat("cannot connect to %s: %s", endpoint.name, ErrnoText(error)));
    }
    const int ready = WaitFor(fd, POLLOUT, deadline);
    int error = 0;
    socklen_t size = sizeof(error);
    if (ready == 0) {
      ::close(fd);
      return absl::DeadlineExceededError(
          absl::StrFormat("connecting to %s timed out", endpoint.name));
    }
    if (ready < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) != 0 || error != 0) {
      const int e = error != 0 ? error : errno;
      ::close(fd);
      return absl::UnavailableError(
          absl::StrFormat("cannot connect to %s: %s", endpoint.name, ErrnoText(e)));
    }
  }
  return fd;
}

// One non-blocking send or receive on a socket, plain or through its TLS
// session: n > 0 bytes moved; n == 0 the peer closed; n < 0 with `error`
// EAGAIN (wait for `wait_for`), EINTR, another errno, or EIO with the TLS
// layer's `tls_error`.
struct IoResult {
  ssize_t n = -1;
  int error = 0;
  short wait_for = POLLIN;
  absl::Status tls_error;
};

IoResult FromTls(const TlsStream::Io& io) {
  IoResult r;
  switch (io.kind) {
    case TlsStream::Io::Kind::kDone:
      r.n = static_cast<ssize_t>(io.bytes);
      break;
    case TlsStream::Io::Kind::kWantRead:
      r.error = EAGAIN;
      r.wait_for = POLLIN;
      break;
    case TlsStream::Io::Kind::kWantWrite:
      r.error = EAGAIN;
      r.wait_for = POLLOUT;
      break;
    case TlsStream::Io::Kind::kClosed:
      r.n = 0;
      break;
    case TlsStream::Io::Kind::kError:
      r.error = EIO;
      r.tls_error = io.error;
      break;
  }
  return r;
}

IoResult SendSome(int fd, TlsStream* tls, std::string_view bytes) {
  if (tls != nullptr) return FromTls(tls->Write(bytes));
  IoResult r;
  r.n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  if (r.n < 0) r.error = errno == EWOULDBLOCK ? EAGAIN : errno;
  r.wait_for = POLLOUT;
  return r;
}

IoResult ReceiveSome(int fd, TlsStream* tls, char* buffer, size_t size) {
  if (tls != nullptr) return FromTls(tls->Read(buffer, size));
  IoResult r;
  r.n = ::recv(fd, buffer, size, MSG_DONTWAIT);
  if (r.n < 0) r.error = errno == EWOULDBLOCK ? EAGAIN : errno;
  return r;
}

// memcached -Y's ASCII authentication, on a connection nobody else uses yet:
// `set <any key> 0 0 <len>` with "<user> <password>" as the value, answered
// STORED, or CLIENT_ERROR authentication failure. Messages name the user and
// the server, never the password.
absl::Status Authenticate(int fd, TlsStream* tls, const Endpoint& endpoint,
                          const ConnectionOptions& options, absl::Time deadline) {
  const std::string secret = options.username + " " + options.password;
  // Exptime -1: memcached -Y ignores it, and a server started without -Y
  // (a misconfiguration) stores the credentials already expired, so no
  // client can read them back.
  std::string request = "set tiercache:auth 0 -1 " + std::to_string(secret.size()) + "\r\n";
  request += secret;
  request += "\r\n";
  std::string_view unsent = request;
  while (!unsent.empty()) {
    const IoResult r = SendSome(fd, tls, unsent);
    if (r.n > 0) {
      unsent.remove_prefix(static_cast<size_t>(r.n));
      continue;
    }
    if (r.n < 0 && (r.error == EAGAIN || r.error == EINTR)) {
      if (WaitFor(fd, r.wait_for, deadline) > 0) continue;
    }
    return absl::UnavailableError(
        absl::StrFormat("memcached %s: could not send the authentication", endpoint.name));
  }
  // The answer is one short line; nothing may follow it (nothing else was asked).
  std::string answer;
  char chunk[256];
  short wait_for = POLLIN;
  while (answer.find("\r\n") == std::string::npos && answer.size() <= 512) {
    const bool buffered = tls != nullptr && tls->HasPending();
    if (!buffered && WaitFor(fd, wait_for, deadline) == 0) {
      return absl::DeadlineExceededError(
          absl::StrFormat("memcached %s did not answer the authentication of user %s in time",
                          endpoint.name, options.username));
    }
    const IoResult r = ReceiveSome(fd, tls, chunk, sizeof(chunk));
    if (!r.tls_error.ok()) return r.tls_error;
    if (r.n == 0 || (r.n < 0 && r.error != EAGAIN && r.error != EINTR)) {
      return absl::UnavailableError(absl::StrFormat(
          "memcached %s closed the connection during authentication", endpoint.name));
    }
    wait_for = r.n < 0 ? r.wait_for : POLLIN;
    if (r.n > 0) answer.append(chunk, static_cast<size_t>(r.n));
  }
  if (answer == "STORED\r\n") return absl::OkStatus();
  if (answer == "CLIENT_ERROR authentication failure\r\n") {
    return absl::PermissionDeniedError(absl::StrFormat(
        "authentication failed for user %s on memcached %s", options.username, endpoint.name));
  }
  // Quote the first line only, and never the password: a server that is not
  // memcached may echo what it was sent (Redis names the arguments of an
  // unknown command).
  std::string first_line = answer.substr(0, std::min(answer.find("\r\n"), size_t{80}));
  for (size_t at = first_line.find(options.password);
       !options.password.empty() && at != std::string::npos;
       at = first_line.find(options.password)) {
    first_line.replace(at, options.password.size(), "<password>");
  }
  return absl::DataLossError(absl::StrFormat(
      "memcached %s answered the authentication of user %s with \"%s\" (is it memcached, "
      "started with -Y?)",
      endpoint.name, options.username, absl::CHexEscape(first_line)));
}

}  // namespace

absl::StatusOr<Endpoint> ParseEndpoint(std::string_view server) {
  Endpoint endpoint;
  endpoint.name = std::string(server);
  if (server.empty()) return absl::InvalidArgumentError("server address is empty");
  if (server.front() == '/') {
    if (server.size() >= sizeof(sockaddr_un::sun_path)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("unix socket path '%s' is %d bytes; the limit is %d", endpoint.name,
                          server.size(), sizeof(sockaddr_un::sun_path) - 1));
    }
    endpoint.is_unix = true;
    endpoint.host = endpoint.name;
    return endpoint;
  }
  const size_t colon = server.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == server.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "server '%s' is not host:port, [ipv6]:port or a unix socket path", endpoint.name));
  }
  std::string_view host = server.substr(0, colon);
  if (host.front() == '[') {
    if (host.back() != ']') {
      return absl::InvalidArgumentError(
          absl::StrFormat("server '%s': unterminated [ipv6] address", endpoint.name));
    }
    host = host.substr(1, host.size() - 2);
  }
  const std::string_view port = server.substr(colon + 1);
  unsigned value = 0;
  auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (error != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
    return absl::InvalidArgumentError(absl::StrFormat("server '%s': port '%s' is not in 1..65535",
                                                      endpoint.name, std::string(port)));
  }
  endpoint.host = std::string(host);
  endpoint.port = static_cast<uint16_t>(value);
  return endpoint;
}

Connection::Connection(Endpoint endpoint, const ConnectionOptions& options, ServerHealth* health)
    : endpoint_(std::move(endpoint)),
      options_(options),
      health_(health),
      parser_(options.max_value_size),
      backoff_(options.reconnect_backoff),
      jitter_(static_cast<uint32_t>(reinterpret_cast<uintptr_t>(this) ^
                                    static_cast<uintptr_t>(absl::GetCurrentTimeNanos()))) {}

Connection::~Connection() {
  if (fd_ >= 0) ::close(fd_);
}

std::string Connection::Describe() const { return "memcached " + endpoint_.name; }

void Connection::Abort(const absl::Status& why) {
  common_internal::MutexLock lock(&mu_);
  // A copy made, and released, under the lock: `why` comes from the health
  // monitor's thread, and the callers read their statuses under the lock
  // (Debian's abseil shares a status's message by an atomic count that
  // ThreadSanitizer cannot see; see health.cc).
  const absl::Status own(why.code(), std::string(why.message()));
  if (fd_ >= 0 || !pending_.empty()) ResetLocked(own);
}

void Connection::Retire() {
  common_internal::MutexLock lock(&mu_);
  retired_ = true;
  CloseIfRetiredLocked();
}

void Connection::CloseIfRetiredLocked() {
  if (!retired_ || reader_active_ || fd_ < 0) return;
  if (pending_.empty()) {
    CloseSocketLocked();
  } else if (OverdueLocked()) {
    // Requests nobody will read for (their callers gave up: a hung server,
    // the usual reason to remove one) would keep the socket open forever.
    ResetLocked(absl::UnavailableError(
        absl::StrFormat("%s was removed from the pool (SetServers)", Describe())));
  }
}

void Connection::AllowReconnectNow() {
  common_internal::MutexLock lock(&mu_);
  next_attempt_ = absl::InfinitePast();
  backoff_ = options_.reconnect_backoff;
}

absl::Status Connection::DownStatusLocked() const {
  // Refused credentials stay PermissionDenied while the next attempt waits.
  return absl::Status(
      absl::IsPermissionDenied(last_error_) ? absl::StatusCode::kPermissionDenied
                                            : absl::StatusCode::kUnavailable,
      absl::StrFormat(
          "%s is down (%s); next reconnect attempt in %s", Describe(), last_error_.message(),
          absl::FormatDuration(absl::Trunc(next_attempt_ - absl::Now(), absl::Milliseconds(1)))));
}

absl::Status Connection::EnsureConnectedLocked(absl::Time deadline) {
  while (true) {
    if (fd_ >= 0 && !reader_active_ && OverdueLocked()) {
      // Nobody is reading, and the oldest request is op_timeout old or timed
      // out: its caller has given up, or is busy elsewhere (the Mirror's
      // sender waits on one server at a time). Its answer may be sitting
      // unread: read what has arrived before judging.
      ReadAvailableLocked();
      if (fd_ >= 0 && OverdueLocked()) {
        // Unanswered for op_timeout: if its answer ever comes it must not be
        // read as the answer to what is sent next, and everything queued
        // behind it is lost with it. Send on a fresh connection.
        const absl::Status why = absl::UnavailableError(absl::StrFormat(
            "%s did not answer within %s", Describe(), absl::FormatDuration(options_.op_timeout)));
        if (health_ != nullptr && !pending_.front()->timed_out) {
          health_->ReportTimeout(why);
        }
        ResetLocked(why, Retry::kAtOnce);
      }
    }
    if (fd_ >= 0 && pending_.empty() && !reader_active_) {
      // Idle: if the server closed its end (a restart), replace the socket
      // now rather than lose the next request to it. Bytes on it, or part of
      // a response left in the parser, with nothing outstanding answer
      // nothing we asked: none of them may be read as the answer to the
      // request about to be sent, so they replace it too.
      char byte;
      bool replace = parser_.buffered() != 0;
      if (tls_ != nullptr) {
        // Through the session: a TLS 1.3 server sends session tickets after
        // the handshake, which are not bytes anybody asked for but are no
        // answer either. Only application data or a closed session count.
        const TlsStream::Io io = tls_->Read(&byte, 1);
        replace = replace || (io.kind != TlsStream::Io::Kind::kWantRead &&
                              io.kind != TlsStream::Io::Kind::kWantWrite);
      } else {
        const ssize_t n = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        replace = replace || n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
      }
      if (replace) CloseSocketLocked();
    }
    if (fd_ >= 0) return absl::OkStatus();
    // Checked here, in the loop: the steps above may have just closed it.
    if (retired_) {
      return absl::UnavailableError(
          absl::StrFormat("%s was removed from the pool (SetServers)", Describe()));
    }
    if (connecting_) {  // another caller is connecting: wait for its outcome
      if (changed_.wait_until(mu_, absl::ToChronoTime(deadline)) == std::cv_status::timeout &&
          connecting_) {
        return absl::DeadlineExceededError(
            absl::StrFormat("%s: still connecting at the deadline", Describe()));
      }
      continue;
    }
    if (absl::Now() < next_attempt_) return DownStatusLocked();
    connecting_ = true;
    mu_.unlock();
    // A caller with less time left than connect_timeout may run out of it
    // while the server is merely slow: that is not a refused connection.
    const absl::Time full_attempt = absl::Now() + options_.connect_timeout;
    const bool cut_short = deadline < full_attempt;
    absl::StatusOr<int> fd = ConnectSocket(endpoint_, std::min(deadline, full_attempt));
    // TLS, then authentication, before the socket is published: nothing else
    // can be sent on it first, and never in plaintext when TLS is on.
    std::shared_ptr<TlsStream> tls;
    if (fd.ok() && options_.tls != nullptr) {
      absl::StatusOr<std::unique_ptr<TlsStream>> stream =
          TlsStream::Handshake(options_.tls, *fd, endpoint_.host, endpoint_.name,
                               std::min(deadline, absl::Now() + options_.connect_timeout));
      if (stream.ok()) {
        tls = *std::move(stream);
      } else {
        ::close(*fd);
        fd = stream.status();
      }
    }
    if (fd.ok() && !options_.username.empty()) {
      if (absl::Status s = Authenticate(*fd, tls.get(), endpoint_, options_, deadline); !s.ok()) {
        tls.reset();
        ::close(*fd);
        fd = s;
      }
    }
    mu_.lock();
    connecting_ = false;
    changed_.notify_all();
    if (fd.ok()) {
      fd_ = *fd;
      tls_ = std::move(tls);
      ++generation_;
      parser_.Reset();
      backoff_ = options_.reconnect_backoff;
      next_attempt_ = absl::InfinitePast();
      last_error_ = absl::OkStatus();
      return absl::OkStatus();
    }
    ResetLocked(fd.status());
    // Refused credentials are not an outage: no failover can fix them.
    if (health_ != nullptr && !absl::IsPermissionDenied(fd.status())) {
      if (cut_short && absl::IsDeadlineExceeded(fd.status())) {
        health_->ReportTimeout(fd.status());
      } else {
        health_->ReportConnectFailure(fd.status());
      }
    }
    if (absl::IsPermissionDenied(fd.status())) {
      // Refused credentials: no quick retries against the server.
      next_attempt_ = absl::Now() + options_.max_reconnect_backoff;
      return fd.status();
    }
    return absl::UnavailableError(fd.status().message());
  }
}

absl::Status Connection::SendLocked(std::string_view bytes, absl::Time deadline) {
  while (!bytes.empty()) {
    const IoResult r = SendSome(fd_, tls_.get(), bytes);
    if (r.n > 0) {
      bytes.remove_prefix(static_cast<size_t>(r.n));
      continue;
    }
    if (r.n < 0 && r.error == EINTR) continue;
    if (r.n < 0 && r.error == EAGAIN) {
      const int ready = WaitFor(fd_, r.wait_for, deadline);
      if (ready > 0) continue;
      if (ready == 0) {
        // Part of a request may be on the wire: the stream cannot go on.
        absl::Status why = absl::DeadlineExceededError(
            absl::StrFormat("%s: sending the request timed out", Describe()));
        ResetLocked(why);
        return why;
      }
    }
    absl::Status why =
        !r.tls_error.ok() ? r.tls_error
        : r.n == 0
            ? absl::UnavailableError(absl::StrFormat("%s closed the TLS session", Describe()))
            : absl::UnavailableError(
                  absl::StrFormat("%s: send failed: %s", Describe(), ErrnoText(r.error)));
    ResetLocked(why);
    return why;
  }
  return absl::OkStatus();
}

void Connection::CompleteFrontLocked(absl::Status status) {
  std::shared_ptr<Exchange> exchange = std::move(pending_.front());
  pending_.pop_front();
  exchange->status = std::move(status);
  exchange->done = true;
  exchange->wake.notify_one();
}

void Connection::HandOffReadingLocked() {
  if (reader_active_) return;
  // A retired connection closes once its last answer is in (or overdue).
  CloseIfRetiredLocked();
  for (const std::shared_ptr<Exchange>& next : pending_) {
    if (next->waiting) {
      next->wake.notify_one();
      return;
    }
  }
}

void Connection::DispatchLocked() {
  while (true) {
    absl::StatusOr<std::optional<Response>> next = parser_.Next();
    if (!next.ok()) {
      ResetLocked(absl::DataLossError(absl::StrFormat("%s sent a malformed response: %s",
                                                      Describe(), next.status().message())),
                  Retry::kAtOnce);
      return;
    }
    if (!next->has_value()) return;
    Response& response = **next;
    if (pending_.empty()) {
      ResetLocked(absl::DataLossError(absl::StrFormat(
                      "%s sent a response nobody asked for; the connection is closed", Describe())),
                  Retry::kAtOnce);
      return;
    }
    Exchange& exchange = *pending_.front();
    absl::StatusOr<RequestBatch::Progress> progress = exchange.batch.Match(&response);
    if (!progress.ok()) {
      if (absl::IsPermissionDenied(progress.status())) {
        // memcached -Y and no credentials: it refused the first request and
        // drops the rest of what was sent. Retrying soon cannot help.
        ResetLocked(absl::PermissionDeniedError(
            absl::StrFormat("%s: %s", Describe(), progress.status().message())));
        next_attempt_ = absl::Now() + options_.max_reconnect_backoff;
        return;
      }
      ResetLocked(absl::DataLossError(absl::StrFormat("%s: %s; the connection is closed",
                                                      Describe(), progress.status().message())),
                  Retry::kAtOnce);
      return;
    }
    if (response.request != Response::kEndOfBatch && response.request != Response::kEndOfList) {
      exchange.responses.push_back(std::move(response));
    }
    if (health_ != nullptr) health_->ReportAnswer();
    if (*progress == RequestBatch::Progress::kComplete) CompleteFrontLocked(absl::OkStatus());
  }
}

bool Connection::OverdueLocked() const {
  return !pending_.empty() && (pending_.front()->timed_out ||
                               absl::Now() - pending_.front()->sent >= options_.op_timeout);
}

void Connection::ReadAvailableLocked() {
  read_buffer_.resize(kReadChunk);
  while (fd_ >= 0) {
    const IoResult r = ReceiveSome(fd_, tls_.get(), read_buffer_.data(), read_buffer_.size());
    if (r.n > 0) {
      parser_.Feed(std::string_view(read_buffer_.data(), static_cast<size_t>(r.n)));
      DispatchLocked();
      continue;
    }
    if (r.n < 0 && r.error == EINTR) continue;
    if (r.n < 0 && r.error == EAGAIN) return;
    if (!r.tls_error.ok()) {
      ResetLocked(r.tls_error);
      return;
    }
    ResetLocked(absl::UnavailableError(
        r.n == 0 ? absl::StrFormat("%s closed the connection", Describe())
                 : absl::StrFormat("%s: receive failed: %s", Describe(), ErrnoText(r.error))));
    return;
  }
}

void Connection::CloseSocketLocked() {
  if (fd_ >= 0) {
    if (reader_active_ && fd_ == reader_fd_) {
      // The reader is polling this descriptor without the lock. Closing it
      // now would let the next connect reuse its number, and the reader
      // would read the new stream's bytes as the old one's. Shut it down
      // instead (which also ends the reader's wait); the reader closes it.
      ::shutdown(fd_, SHUT_RDWR);
      reader_closes_ = true;
    } else {
      ::close(fd_);
    }
  }
  fd_ = -1;
  tls_.reset();  // a reader holds its own reference until it is done
  ++generation_;
  parser_.Reset();
}

void Connection::ResetLocked(absl::Status why, Retry retry) {
  CloseSocketLocked();
  // Each caller gets a status of its own: copies of one would share its
  // reference-counted message across threads, and that count is managed
  // inside Debian's abseil, which ThreadSanitizer cannot see into.
  while (!pending_.empty()) CompleteFrontLocked(absl::Status(why.code(), why.message()));
  if (retry == Retry::kAtOnce) {
    next_attempt_ = absl::InfinitePast();
    changed_.notify_all();
    return;
  }
  // Back off before the next attempt: +-50% jitter so that many clients do
  // not reconnect in step.
  std::uniform_real_distribution<double> spread(0.5, 1.5);
  next_attempt_ = absl::Now() + backoff_ * spread(jitter_);
  backoff_ = std::min(backoff_ * 2, options_.max_reconnect_backoff);
  last_error_ = why;
  changed_.notify_all();
}

absl::StatusOr<std::vector<Response>> Connection::Call(RequestBatch batch, absl::Time deadline) {
  absl::StatusOr<Ticket> ticket = Send(std::move(batch), deadline);
  if (!ticket.ok()) return ticket.status();
  return Wait(*ticket, deadline);
}

absl::StatusOr<Connection::Ticket> Connection::Send(RequestBatch batch, absl::Time deadline) {
  common_internal::MutexLock lock(&mu_, std::defer_lock);
  if (!lock.TryLockUntil(deadline)) {
    return absl::DeadlineExceededError(absl::StrFormat("%s: busy until the deadline", Describe()));
  }
  if (absl::Status s = EnsureConnectedLocked(deadline); !s.ok()) return s;
  auto exchange = std::make_shared<Exchange>();
  exchange->batch = std::move(batch);
  exchange->sent = absl::Now();
  pending_.push_back(exchange);
  if (absl::Status s = SendLocked(exchange->batch.bytes(), deadline); !s.ok()) return s;
  return exchange;
}

absl::StatusOr<std::vector<Response>> Connection::Wait(const Ticket& ticket, absl::Time deadline) {
  Exchange* const exchange = ticket.get();
  common_internal::MutexLock lock(&mu_, std::defer_lock);
  if (!lock.TryLockUntil(deadline)) {
    return absl::DeadlineExceededError(absl::StrFormat("%s: busy until the deadline", Describe()));
  }
  // Each waiter sleeps on its own exchange: a completion wakes exactly its
  // caller, and a reader that leaves wakes exactly one successor.
  while (!exchange->done) {
    if (absl::Now() >= deadline) {
      // The answer may be on the socket unread: a caller that waited for
      // another server first (FetchMany's parts) reaches this one late.
      // Read what has arrived before calling it a timeout.
      if (!reader_active_ && fd_ >= 0) {
        ReadAvailableLocked();
        if (exchange->done) break;
      }
      HandOffReadingLocked();
      const absl::Status why = absl::DeadlineExceededError(absl::StrFormat(
          "%s did not answer within %s", Describe(), absl::FormatDuration(options_.op_timeout)));
      // Only a request left unanswered for about op_timeout is evidence
      // against the server (a caller's own deadline may be shorter; it was
      // set a moment before the request was sent).
      if (absl::Now() - exchange->sent >= options_.op_timeout / 2) {
        exchange->timed_out = true;
        if (health_ != nullptr) health_->ReportTimeout(why);
      }
      return why;
    }
    if (reader_active_) {
      exchange->waiting = true;
      exchange->wake.wait_until(lock, absl::ToChronoTime(deadline));
      exchange->waiting = false;
      continue;
    }
    // Become the reader until our exchange is done or the deadline passes.
    reader_active_ = true;
    const int fd = fd_;
    reader_fd_ = fd;
    const std::shared_ptr<TlsStream> tls = tls_;
    const uint64_t generation = generation_;
    lock.unlock();
    read_buffer_.resize(kReadChunk);
    ssize_t received = -1;
    int error = 0;
    absl::Status tls_error;
    // Bytes a TLS session has already decrypted are invisible to poll().
    // Over TLS the wait is cut into short slices, each silent one ended by a
    // kick (TlsStream::Kick: memcached 1.6.18 leaves pipelined records
    // unread until more bytes arrive).
    int ready = 0;
    if (tls != nullptr && tls->HasPending()) {
      ready = POLLIN;
    } else if (tls != nullptr) {
      ready = WaitFor(fd, POLLIN, std::min(deadline, absl::Now() + kTlsKickInterval));
      if (ready == 0 && absl::Now() < deadline) {
        tls->Kick();
        error = EAGAIN;  // not a timeout: wait again
      }
    } else {
      ready = WaitFor(fd, POLLIN, deadline);
    }
    if (ready > 0) {
      IoResult r = ReceiveSome(fd, tls.get(), read_buffer_.data(), read_buffer_.size());
      received = r.n;
      error = r.error;
      tls_error = std::move(r.tls_error);
      // A session that must send before it can read (a kick's KeyUpdate
      // still unsent): wait until the socket takes it, not for input.
      if (received < 0 && error == EAGAIN && r.wait_for == POLLOUT) {
        (void)WaitFor(fd, POLLOUT, std::min(deadline, absl::Now() + kTlsKickInterval));
      }
    }
    lock.lock();
    reader_active_ = false;
    if (reader_closes_) {  // reset while this thread read: see CloseSocketLocked
      ::close(fd);
      reader_closes_ = false;
    }
    if (generation == generation_) {
      if (received > 0) {
        parser_.Feed(std::string_view(read_buffer_.data(), static_cast<size_t>(received)));
        DispatchLocked();
      } else if (received == 0) {
        ResetLocked(
            absl::UnavailableError(absl::StrFormat("%s closed the connection", Describe())));
      } else if (!tls_error.ok()) {
        ResetLocked(tls_error);
      } else if (ready > 0 && error != EAGAIN && error != EWOULDBLOCK && error != EINTR) {
        ResetLocked(absl::UnavailableError(
            absl::StrFormat("%s: receive failed: %s", Describe(), ErrnoText(error))));
      } else if (ready == 0 && error != EAGAIN && !pending_.empty() &&
                 std::min(absl::Now(), deadline) - pending_.front()->sent >= options_.op_timeout) {
        // Nothing for a whole op_timeout while a request waits: the server
        // is hung or unreachable. Fail everything now; the next calls fail
        // fast until a reconnect succeeds. Judged at the reader's deadline,
        // when its wait ended, not at whenever this thread was woken: the
        // branch taken (this one, or the caller's timeout above, and so what
        // is counted against the server) must not depend on how late the
        // scheduler ran it.
        const absl::Status why = absl::UnavailableError(absl::StrFormat(
            "%s did not answer within %s", Describe(), absl::FormatDuration(options_.op_timeout)));
        // With a health monitor, timeouts are counted there and it marks
        // the server down after timeouts_before_down of them: this
        // connection must not hide the next ones behind a backoff of its own.
        // One timeout per unanswered request: the oldest one's, unless its
        // caller counted it when it gave up; then this caller's own, if it
        // went unanswered as long as a caller's own count requires.
        if (health_ != nullptr) {
          Exchange* unanswered = pending_.front().get();
          if (unanswered->timed_out) {
            unanswered =
                !exchange->timed_out && absl::Now() - exchange->sent >= options_.op_timeout / 2
                    ? exchange
                    : nullptr;
          }
          if (unanswered != nullptr) {
            health_->ReportTimeout(why);
            unanswered->timed_out = true;
          }
        }
        ResetLocked(why, health_ != nullptr ? Retry::kAtOnce : Retry::kAfterBackoff);
      }
    }
  }
  HandOffReadingLocked();
  if (!exchange->status.ok()) return exchange->status;
  return std::move(exchange->responses);
}

}  // namespace tiercache::mirror_internal
