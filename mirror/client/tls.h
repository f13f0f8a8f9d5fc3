// TLS for connections to memcached (memcached -Z), on OpenSSL 3.
//
// TlsContext is built once per client from MemcachedOptions::tls: TLS 1.2 at
// least, the CA bundle that must have signed the server (the system store by
// default), an optional client certificate for mutual TLS, and peer
// verification (on by default). Every error names what was wrong and
// OpenSSL's reason; there is never a fallback to plaintext.
//
// TlsStream is one TLS session over one connected, non-blocking socket. The
// handshake checks the chain and the name (server_name, else the host of the
// server entry: a DNS name or an IP address). After it, Read and Write move
// bytes without blocking and say what the socket must become ready for.
//
// Threads: an SSL object must not be used by two threads at once, and a
// Connection's reader reads while other threads write. Every call below that
// touches the session takes the stream's own mutex for the call's duration
// (they never block: the sockets are non-blocking), so a reader and a writer
// interleave record by record.

#ifndef TIERCACHE_MIRROR_CLIENT_TLS_H_
#define TIERCACHE_MIRROR_CLIENT_TLS_H_

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tiercache/memcached.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace tiercache::mirror_internal {

class TlsContext {
 public:
  // InvalidArgument naming the file or option that is wrong, with OpenSSL's
  // reason.
  static absl::StatusOr<std::shared_ptr<TlsContext>> Create(const TlsOptions& options);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  const TlsOptions& options() const { return options_; }
  SSL_CTX* get() const { return ctx_; }
  // Held for each step of a handshake (one non-blocking SSL_connect call):
  // concurrent handshakes on one context race on state OpenSSL fills in
  // lazily on shared objects such as the CA certificates (ThreadSanitizer
  // reported it: ASN1_STRING_set against ASN1_STRING_cmp). Handshakes are
  // rare (a connect), so serializing their steps costs nothing measurable.
  std::mutex& handshake_mutex() { return handshake_mu_; }

 private:
  TlsContext(TlsOptions options, SSL_CTX* ctx) : options_(std::move(options)), ctx_(ctx) {}
  const TlsOptions options_;
  SSL_CTX* const ctx_;
  std::mutex handshake_mu_;
};

class TlsStream {
 public:
  // What an I/O call did: moved `bytes`, or needs the socket readable or
  // writable first, or the peer closed the session, or failed (`error`).
  struct Io {
    enum class Kind { kDone, kWantRead, kWantWrite, kClosed, kError };
    Kind kind = Kind::kDone;
    size_t bytes = 0;
    absl::Status error;
  };

  // The TLS handshake on `fd` (connected, non-blocking), verifying the peer
  // as the context says, for the server called `host`. Unavailable with
  // OpenSSL's reason (and the certificate verification result) on failure;
  // DeadlineExceeded at `deadline`. `server` names the server in messages.
  static absl::StatusOr<std::unique_ptr<TlsStream>> Handshake(std::shared_ptr<TlsContext> context,
                                                              int fd, std::string_view host,
                                                              std::string_view server,
                                                              absl::Time deadline);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  Io Read(char* buffer, size_t size);
  Io Write(std::string_view bytes);
  // Decrypted bytes already inside the session: a reader must take them
  // before it waits on the socket (poll cannot see them). Part of a record
  // does not count: its rest is on the socket, where poll sees it.
  bool HasPending();
  // Sends a TLS 1.3 KeyUpdate: a record with no application data, which
  // memcached's TLS layer consumes without answering. Why: memcached 1.6.18
  // reads one TLS record per wake-up; records that arrived together wait in
  // its TLS buffer, unseen by its epoll, until more bytes arrive (a pipeline
  // of 2+ records stalls until op_timeout: measured, see docs/design.md). A
  // reader that hears nothing for a moment sends one, and memcached reads on.
  // No-op below TLS 1.3.
  void Kick();

 private:
  TlsStream(std::shared_ptr<TlsContext> context, SSL* ssl, std::string server)
      : context_(std::move(context)), ssl_(ssl), server_(std::move(server)) {}
  Io Result(int ret, size_t bytes);

  const std::shared_ptr<TlsContext> context_;  // outlives the session
  std::mutex mu_;                              // one thread in the session at a time
  SSL* const ssl_;
  const std::string server_;
};

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_CLIENT_TLS_H_
