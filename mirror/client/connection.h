// One connection to one memcached server, shared by many threads.
//
// Requests are pipelined: a caller appends its request bytes to the socket
// and its exchange to `pending_`, in the same order, under the lock; memcached
// answers in order, so the responses at the head of the stream belong to the
// exchange at the head of `pending_` — if the server behaves. Nothing is
// taken on trust: every response is handed to the head exchange's
// RequestBatch::Match, which checks the opaque token (unique on this
// connection), the key echoed and the kind of answer. The first response that
// does not match is a desync: every pending exchange fails with DataLoss
// naming the server and the mismatch, the socket is closed and never read
// again, and the next call connects afresh.
//
// There is no I/O thread. A caller waiting for its answer becomes the reader
// if no other thread is reading: it receives, parses and hands responses to
// whichever exchanges they belong to, waking their callers, until its own is
// complete; then another waiter takes over. A lone blocking call therefore
// costs one send and one receive in the calling thread.
//
// Failure handling, all under the lock:
//   - a closed or reset stream resets the connection: every pending
//     exchange fails with Unavailable, the socket is closed, and reconnects
//     back off exponentially with jitter; a malformed or desynced stream does
//     the same with DataLoss, but the next call reconnects at once;
//   - while backing off, calls fail at once (Unavailable) instead of waiting;
//   - a reader that sees no byte for op_timeout while the oldest request is
//     overdue declares the server unresponsive and resets;
//   - an idle socket that the server has closed (a restart), or on which it
//     sent bytes nobody asked for, is noticed and replaced before a request
//     is sent on it;
//   - an error line that shows the server did not read a request as it was
//     framed (see IsInStepError) is a desync too;
//   - a request is not queued behind one unanswered for op_timeout that
//     nobody is reading for: what has arrived is read first, and if the
//     answer is still missing the connection is replaced;
//   - no caller waits past its deadline: the lock itself is a timed mutex,
//     and a caller that gives up leaves its exchange to be answered and
//     dropped, keeping the stream in step;
//   - with credentials, a new connection authenticates before it is
//     published (no request can be sent on it before): refused credentials
//     are PermissionDenied, and the next attempt waits max_reconnect_backoff
//     (credentials do not fix themselves in milliseconds).

#ifndef TIERCACHE_MIRROR_CLIENT_CONNECTION_H_
#define TIERCACHE_MIRROR_CLIENT_CONNECTION_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/health.h"
#include "client/tls.h"
#include "mutex.h"
#include "protocol/meta_protocol.h"

namespace tiercache::mirror_internal {

struct Endpoint {
  std::string name;  // as configured: "host:port" or a socket path
  bool is_unix = false;
  std::string host;  // or the path
  uint16_t port = 0;
};
// "host:port", "[v6]:port" or "/path". InvalidArgument names what is wrong.
absl::StatusOr<Endpoint> ParseEndpoint(std::string_view server);

struct ConnectionOptions {
  absl::Duration connect_timeout = absl::Seconds(1);
  absl::Duration op_timeout = absl::Milliseconds(500);
  absl::Duration reconnect_backoff = absl::Milliseconds(20);
  absl::Duration max_reconnect_backoff = absl::Seconds(2);
  size_t max_value_size = 64 << 20;
  // TLS (memcached -Z) when set: every new connection completes its
  // handshake, verified as the context says, before anything is sent.
  std::shared_ptr<TlsContext> tls;
  // memcached's ASCII authentication (memcached -Y): sent first on every new
  // connection when `username` is not empty (over TLS when TLS is on). Never
  // part of a message.
  std::string username;
  std::string password;
};

class Connection {
 public:
  struct Exchange {
    RequestBatch batch;  // what was sent, and the rules its answers must meet
    absl::Time sent;
    std::vector<Response> responses;
    absl::Status status;
    bool done = false;
    bool waiting = false;  // its caller sleeps on `wake`
    // Judged a timeout: by its caller, giving up at its deadline after at
    // least op_timeout/2 unanswered, or by the reader. Counted against the
    // server once (one unanswered request is one timeout), and at the front
    // of the queue it makes the connection overdue (OverdueLocked) at once:
    // `sent` lies after the caller's deadline was set, so sent + op_timeout
    // comes a moment after the caller has given up, and a request sent in
    // that moment would queue behind one that may never be answered.
    bool timed_out = false;
    std::condition_variable_any wake;  // completed, or asked to take over reading
  };

  // `health` (optional, outlives the connection) hears of its connect
  // failures, timeouts and answers.
  Connection(Endpoint endpoint, const ConnectionOptions& options, ServerHealth* health = nullptr);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // `n` opaque tokens for a RequestBatch to be sent on this connection:
  // never handed out twice, so a token names one request.
  uint64_t ReserveOpaque(size_t n) { return next_opaque_.fetch_add(n, std::memory_order_relaxed); }

  // Sends `batch` and returns the responses that answer it, in stream order,
  // each with its `request` index (not the end marker's). DeadlineExceeded at
  // `deadline`; Unavailable when the server is down or the connection broke;
  // DataLoss when a response was malformed or did not answer its request.
  // REQUIRES: batch's tokens were reserved on this connection.
  absl::StatusOr<std::vector<Response>> Call(RequestBatch batch, absl::Time deadline);

  // Call in two halves, so that one thread can have several requests in
  // flight on the connection: Send puts the request on the wire (in order with
  // every other Send and Call) and returns at once; Wait collects its answer.
  using Ticket = std::shared_ptr<Exchange>;
  absl::StatusOr<Ticket> Send(RequestBatch batch, absl::Time deadline);
  absl::StatusOr<std::vector<Response>> Wait(const Ticket& ticket, absl::Time deadline);

  const Endpoint& endpoint() const { return endpoint_; }

  // Fails everything pending with `why` and closes the socket (the server
  // was marked down); the next call reconnects after the usual backoff.
  void Abort(const absl::Status& why);
  // The server is back (a probe was answered): the next call connects at
  // once, whatever backoff this connection had reached.
  void AllowReconnectNow();
  // The server left the pool (SetServers): what is pending is answered, then
  // the socket closes and is never reopened (a late caller gets Unavailable).
  void Retire();

 private:
  // Makes `fd_` a live connection or says why not. Releases the lock while
  // it connects.
  absl::Status EnsureConnectedLocked(absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes all of `bytes`, or resets the connection.
  absl::Status SendLocked(std::string_view bytes, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // REQUIRES: this thread holds the reader role (or nobody reads).
  void DispatchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fails every pending exchange with `why`, closes the socket and schedules
  // the next reconnect attempt: after a backoff when the server failed, at
  // once after a desync (the server is there; only this stream is lost).
  enum class Retry { kAfterBackoff, kAtOnce };
  void ResetLocked(absl::Status why, Retry retry = Retry::kAfterBackoff)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CompleteFrontLocked(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Closes the socket (or, while a reader polls it, shuts it down for the
  // reader to close) and forgets the stream.
  void CloseSocketLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // REQUIRES: no reader. Reads and dispatches whatever has arrived, without
  // waiting.
  void ReadAvailableLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The oldest pending request is op_timeout old, or judged a timeout.
  bool OverdueLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // If nobody reads, wakes one caller still waiting so that it becomes the
  // reader.
  void HandOffReadingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DownStatusLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Retired and nobody reading: closes the socket if nothing is pending,
  // or fails what is pending once it is overdue.
  void CloseIfRetiredLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string Describe() const;

  const Endpoint endpoint_;
  const ConnectionOptions options_;
  ServerHealth* const health_;  // may be null

  // Guards the stream's state below, and every Exchange's fields (which the
  // analysis cannot name: they live in objects shared with the callers).
  // Timed: no caller waits past its deadline, not even for the lock.
  common_internal::Mutex mu_;
  std::condition_variable_any changed_;  // a connection attempt ended
  int fd_ ABSL_GUARDED_BY(mu_) = -1;
  // The TLS session on fd_ (null without TLS). Shared: a reader reading
  // outside the lock keeps the one it started with alive, as it keeps its fd.
  std::shared_ptr<TlsStream> tls_ ABSL_GUARDED_BY(mu_);
  // Bumped by every reset: a reader's fd may be stale.
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool connecting_ ABSL_GUARDED_BY(mu_) = false;
  bool retired_ ABSL_GUARDED_BY(mu_) = false;  // see Retire
  bool reader_active_ ABSL_GUARDED_BY(mu_) = false;
  int reader_fd_ ABSL_GUARDED_BY(mu_) = -1;  // the descriptor the reader polls
  // reader_fd_ was shut down: the reader closes it.
  bool reader_closes_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::shared_ptr<Exchange>> pending_ ABSL_GUARDED_BY(mu_);
  ResponseParser parser_ ABSL_GUARDED_BY(mu_);
  // Not guarded by mu_ but by the reader role: used by the reader outside
  // the lock, or by ReadAvailableLocked under the lock while nobody reads.
  std::string read_buffer_;
  std::atomic<uint64_t> next_opaque_{1};
  // Reconnect schedule while down.
  absl::Time next_attempt_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Duration backoff_ ABSL_GUARDED_BY(mu_);
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  std::minstd_rand jitter_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_CLIENT_CONNECTION_H_
