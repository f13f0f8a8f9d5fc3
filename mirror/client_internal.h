// MemcachedClient's insides, shared with the Mirror (which pipelines its
// writes on the client's connections). Not a public header.

#ifndef TIERCACHE_MIRROR_CLIENT_INTERNAL_H_
#define TIERCACHE_MIRROR_CLIENT_INTERNAL_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "connection.h"
#include "ketama.h"
#include "protocol/meta_protocol.h"
#include "tiercache/memcached.h"

namespace tiercache {

using mirror_internal::Connection;
using mirror_internal::RequestBatch;
using mirror_internal::Response;
using mirror_internal::WireKey;

// A response that is not one of the request's normal answers, as a status
// naming `what` was asked (CLIENT_ERROR, SERVER_ERROR, ERROR, ...).
absl::Status UnexpectedResponse(const Response& r, std::string_view what);

class MemcachedClient::Impl {
 public:
  struct Server {
    std::vector<std::unique_ptr<Connection>> connections;
    // Each thread keeps to one connection (threads are dealt out round-robin
    // on first use): a thread alone on its connection reads its own answers
    // with no handoff, and threads that share one pipeline their requests.
    Connection& Pick() {
      thread_local const size_t slot = next_thread.fetch_add(1, std::memory_order_relaxed);
      return *connections[slot % connections.size()];
    }
    static inline std::atomic<size_t> next_thread{0};
  };

  explicit Impl(const MemcachedOptions& options) : options_(options) {}

  const MemcachedOptions options_;  // a copy: the client's own is moved after this is built
  std::vector<std::unique_ptr<Server>> servers_;

  absl::StatusOr<WireKey> Key(std::string_view key) const {
    return mirror_internal::EncodeKey(options_.key_prefix, key);
  }
  // Pools place keys as libmemcached's ketama does (by the key without the
  // prefix, as libmemcached hashes a namespaced key).
  std::unique_ptr<mirror_internal::Ketama> ketama_;  // null with one server
  size_t ServerIndexFor(std::string_view user_key) const {
    return ketama_ == nullptr ? 0 : ketama_->ServerFor(user_key);
  }
  Server& ServerFor(std::string_view user_key) { return *servers_[ServerIndexFor(user_key)]; }
  absl::Time Deadline() const { return absl::Now() + options_.op_timeout; }

  // One request for `key`, added to a batch by `encode(wire_key, &batch)`, and
  // the response that provably answers it.
  template <typename EncodeFn>
  absl::StatusOr<Response> Exchange(std::string_view key, EncodeFn&& encode) {
    absl::StatusOr<WireKey> wire = Key(key);
    if (!wire.ok()) return wire.status();
    Connection& connection = ServerFor(key).Pick();
    mirror_internal::RequestBatch batch(connection.ReserveOpaque(1));
    if (absl::Status s = encode(*wire, &batch); !s.ok()) return s;
    absl::StatusOr<std::vector<Response>> responses = connection.Call(std::move(batch), Deadline());
    if (!responses.ok()) return responses.status();
    return std::move(responses->front());
  }

  absl::Status CheckValue(const WireKey& key, size_t value_size) const {
    // memcached stores key, value and a ~50-byte header in one item.
    constexpr size_t kItemHeader = 64;
    if (key.text.size() + value_size + kItemHeader > options_.max_item_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "value is %d bytes; with its key and memcached's item header it exceeds the server's "
          "item size limit of %d bytes (max_item_size, memcached -I)",
          value_size, options_.max_item_size));
    }
    return absl::OkStatus();
  }
};

}  // namespace tiercache

#endif  // TIERCACHE_MIRROR_CLIENT_INTERNAL_H_
