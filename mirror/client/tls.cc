#include "client/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace tiercache::mirror_internal {
namespace {

// OpenSSL's queued errors, oldest first, as one line (and the queue cleared).
std::string OpenSslErrors() {
  std::string text;
  while (const unsigned long code = ERR_get_error()) {
    char line[256];
    ERR_error_string_n(code, line, sizeof(line));
    if (!text.empty()) text += "; ";
    text += line;
  }
  return text.empty() ? "no OpenSSL error queued" : text;
}

int PollMs(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))));
}

// True once `fd` is ready for `events`, false at the deadline.
bool WaitUntilReady(int fd, short events, absl::Time deadline) {
  while (true) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, PollMs(deadline));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return false;
  }
}

// OpenSSL's socket BIO writes with write(): a peer that reset the
// connection would raise SIGPIPE and kill the process. This BIO is the
// socket BIO but for its write, which is send() with MSG_NOSIGNAL, as the
// plaintext path sends.
int SendNoSignal(BIO* bio, const char* data, int size) {
  const int fd = static_cast<int>(BIO_get_fd(bio, nullptr));
  BIO_clear_retry_flags(bio);
  const ssize_t n = ::send(fd, data, static_cast<size_t>(size), MSG_NOSIGNAL);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    BIO_set_retry_write(bio);
  }
  return static_cast<int>(n);
}

const BIO_METHOD* NoSignalSocketMethod() {
  static const BIO_METHOD* const method = [] {
    const BIO_METHOD* socket = BIO_s_socket();
    BIO_METHOD* m = BIO_meth_new(BIO_TYPE_SOCKET, "tiercache socket (MSG_NOSIGNAL)");
    BIO_meth_set_write(m, SendNoSignal);
    BIO_meth_set_read(m, BIO_meth_get_read(socket));
    BIO_meth_set_puts(m, BIO_meth_get_puts(socket));
    BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(socket));
    BIO_meth_set_create(m, BIO_meth_get_create(socket));
    BIO_meth_set_destroy(m, BIO_meth_get_destroy(socket));
    return m;
  }();
  return method;
}

bool IsIpAddress(std::string_view host) {
  unsigned char buffer[16];
  const std::string text(host);
  return inet_pton(AF_INET, text.c_str(), buffer) == 1 ||
         inet_pton(AF_INET6, text.c_str(), buffer) == 1;
}

}  // namespace

absl::StatusOr<std::shared_ptr<TlsContext>> TlsContext::Create(const TlsOptions& options) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) {
    return absl::InternalError("TLS: cannot create an OpenSSL context: " + OpenSslErrors());
  }
  std::shared_ptr<TlsContext> context(new TlsContext(options, ctx));
  // TLS 1.2 at least; OpenSSL 3's defaults choose the ciphers.
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // No session cache shared between connections: nothing of one session is
  // written where another thread's session reads.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  // Partial writes, retried with the rest of the same buffer.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (options.verify_peer) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    const int loaded = options.ca_file.empty()
                           ? SSL_CTX_set_default_verify_paths(ctx)
                           : SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr);
    if (loaded != 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "TLS: cannot load the CA bundle %s: %s",
          options.ca_file.empty() ? "of the system store" : options.ca_file, OpenSslErrors()));
    }
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS: cert_file and key_file go together (mutual TLS): give both or neither");
  }
  if (!options.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, options.cert_file.c_str()) != 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "TLS: cannot load the client certificate %s: %s", options.cert_file, OpenSslErrors()));
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      return absl::InvalidArgumentError(
          absl::StrFormat("TLS: cannot load the client key %s (is it the key of %s?): %s",
                          options.key_file, options.cert_file, OpenSslErrors()));
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      return absl::InvalidArgumentError(
          absl::StrFormat("TLS: the key %s does not match the certificate %s: %s", options.key_file,
                          options.cert_file, OpenSslErrors()));
    }
  }
  return context;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

absl::StatusOr<std::unique_ptr<TlsStream>> TlsStream::Handshake(std::shared_ptr<TlsContext> context,
                                                                int fd, std::string_view host,
                                                                std::string_view server,
                                                                absl::Time deadline) {
  ERR_clear_error();
  SSL* ssl = SSL_new(context->get());
  if (ssl == nullptr) {
    return absl::InternalError("TLS: cannot create a session: " + OpenSslErrors());
  }
  std::unique_ptr<TlsStream> stream(new TlsStream(context, ssl, std::string(server)));
  const TlsOptions& options = context->options();
  const std::string name = options.server_name.empty() ? std::string(host) : options.server_name;
  const bool ip = IsIpAddress(name);
  // SNI is a host name only; an IP address is checked against the
  // certificate's IP entries instead.
  if (!ip) SSL_set_tlsext_host_name(ssl, name.c_str());
  if (options.verify_peer) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    const int set = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str())
                       : X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0);
    if (set != 1) {
      return absl::InvalidArgumentError(
          absl::StrFormat("TLS: cannot check the server name '%s': %s", name, OpenSslErrors()));
    }
  }
  BIO* bio = BIO_new(NoSignalSocketMethod());
  if (bio == nullptr) {
    return absl::InternalError("TLS: cannot create a socket BIO: " + OpenSslErrors());
  }
  BIO_set_fd(bio, fd, BIO_NOCLOSE);
  SSL_set_bio(ssl, bio, bio);  // the session owns it now
  while (true) {
    int ret = 0;
    {
      std::lock_guard<std::mutex> hold(context->handshake_mutex());
      ERR_clear_error();
      ret = SSL_connect(ssl);
    }
    if (ret == 1) return stream;
    const int error = SSL_get_error(ssl, ret);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      if (WaitUntilReady(fd, error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) continue;
      return absl::DeadlineExceededError(
          absl::StrFormat("memcached %s: the TLS handshake did not finish in time (is the server "
                          "started with TLS, memcached -Z?)",
                          server));
    }
    std::string why = OpenSslErrors();
    const long verify = SSL_get_verify_result(ssl);
    if (options.verify_peer && verify != X509_V_OK) {
      why = absl::StrFormat("%s (certificate: %s)", why, X509_verify_cert_error_string(verify));
    }
    if (error == SSL_ERROR_SYSCALL && errno != 0) why += absl::StrFormat(" (%s)", strerror(errno));
    if (error == SSL_ERROR_SYSCALL || error == SSL_ERROR_ZERO_RETURN) {
      why +=
          "; the server closed the connection during the handshake (is it started with TLS, "
          "memcached -Z?)";
    }
    return absl::UnavailableError(
        absl::StrFormat("memcached %s: TLS handshake failed: %s", server, why));
  }
}

TlsStream::~TlsStream() { SSL_free(ssl_); }

TlsStream::Io TlsStream::Result(int ret, size_t bytes) {
  Io io;
  if (ret > 0) {
    io.bytes = bytes;
    return io;
  }
  switch (SSL_get_error(ssl_, ret)) {
    case SSL_ERROR_WANT_READ:
      io.kind = Io::Kind::kWantRead;
      return io;
    case SSL_ERROR_WANT_WRITE:
      io.kind = Io::Kind::kWantWrite;
      return io;
    case SSL_ERROR_ZERO_RETURN:
      io.kind = Io::Kind::kClosed;
      return io;
    case SSL_ERROR_SYSCALL:
      if (ERR_peek_error() == 0) {  // EOF without close_notify, or a reset
        io.kind = Io::Kind::kClosed;
        return io;
      }
      [[fallthrough]];
    default:
      io.kind = Io::Kind::kError;
      io.error = absl::UnavailableError(
          absl::StrFormat("memcached %s: TLS error: %s", server_, OpenSslErrors()));
      return io;
  }
}

TlsStream::Io TlsStream::Read(char* buffer, size_t size) {
  std::lock_guard<std::mutex> hold(mu_);
  ERR_clear_error();
  size_t read = 0;
  const int ret = SSL_read_ex(ssl_, buffer, size, &read);
  return Result(ret, read);
}

TlsStream::Io TlsStream::Write(std::string_view bytes) {
  std::lock_guard<std::mutex> hold(mu_);
  ERR_clear_error();
  size_t written = 0;
  const int ret = SSL_write_ex(ssl_, bytes.data(), bytes.size(), &written);
  return Result(ret, written);
}

void TlsStream::Kick() {
  std::lock_guard<std::mutex> hold(mu_);
  if (SSL_version(ssl_) < TLS1_3_VERSION) return;
  ERR_clear_error();
  // One update at a time: a pending one is flushed, not requested again.
  if (SSL_get_key_update_type(ssl_) == SSL_KEY_UPDATE_NONE &&
      SSL_key_update(ssl_, SSL_KEY_UPDATE_NOT_REQUESTED) != 1) {
    ERR_clear_error();
    return;
  }
  (void)SSL_do_handshake(ssl_);  // sends it now, or with the next write (non-blocking)
  ERR_clear_error();
}

bool TlsStream::HasPending() {
  std::lock_guard<std::mutex> hold(mu_);
  // Decrypted bytes only: SSL_has_pending also counts part of a record whose
  // rest is still on the socket, and a reader that skipped poll() for it
  // would spin until the rest arrives.
  return SSL_pending(ssl_) > 0;
}

}  // namespace tiercache::mirror_internal
