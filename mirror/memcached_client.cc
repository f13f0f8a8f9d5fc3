#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "client_internal.h"
#include "connection.h"
#include "protocol/meta_protocol.h"
#include "tiercache/memcached.h"

namespace tiercache {

using Code = mirror_internal::Response::Code;

absl::Status UnexpectedResponse(const Response& r, std::string_view what) {
  switch (r.code) {
    case Code::kClientError:
      if (absl::StrContains(r.message, "non-numeric")) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "%s: memcached cannot increment or decrement a non-numeric value", std::string(what)));
      }
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: memcached refused the request: CLIENT_ERROR %s", std::string(what), r.message));
    case Code::kServerError:
      if (absl::StrContains(r.message, "out of memory")) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "%s: memcached is out of memory: SERVER_ERROR %s", std::string(what), r.message));
      }
      if (absl::StrContains(r.message, "too large")) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: memcached refused the value: SERVER_ERROR %s", std::string(what), r.message));
      }
      return absl::InternalError(
          absl::StrFormat("%s: SERVER_ERROR %s", std::string(what), r.message));
    case Code::kError:
      return absl::InternalError(
          absl::StrFormat("%s: memcached does not know the command (ERROR)", std::string(what)));
    default:
      return absl::InternalError(absl::StrFormat("%s: unexpected response code %d",
                                                 std::string(what), static_cast<int>(r.code)));
  }
}

namespace {

Item ToItem(Response& r) {
  Item item;
  item.value = std::move(r.value);
  item.flags = r.client_flags.value_or(0);
  item.cas = r.cas.value_or(0);
  item.expiry = !r.ttl.has_value() || *r.ttl < 0 ? absl::InfiniteFuture()
                                                 : absl::Now() + absl::Seconds(*r.ttl);
  return item;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MemcachedClient>> MemcachedClient::Create(MemcachedOptions options) {
  if (options.servers.empty()) return absl::InvalidArgumentError("no memcached servers given");
  if (options.op_timeout <= absl::ZeroDuration() ||
      options.connect_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("op_timeout and connect_timeout must be positive");
  }
  if (options.default_ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("default_ttl is %s; it must be positive (InfiniteDuration: never expire)",
                        absl::FormatDuration(options.default_ttl)));
  }
  if (options.connections_per_server == 0) {
    return absl::InvalidArgumentError("connections_per_server must be >= 1");
  }
  if (options.key_prefix.size() >= mirror_internal::kMaxWireKey) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "key_prefix is %d bytes; memcached keys are at most 250", options.key_prefix.size()));
  }
  auto impl = std::make_unique<Impl>(options);
  mirror_internal::ConnectionOptions connection_options;
  connection_options.connect_timeout = options.connect_timeout;
  connection_options.op_timeout = options.op_timeout;
  connection_options.reconnect_backoff = options.reconnect_backoff;
  connection_options.max_reconnect_backoff = options.max_reconnect_backoff;
  connection_options.max_value_size = options.max_item_size;
  std::vector<std::string> names;
  for (const std::string& server : options.servers) {
    absl::StatusOr<mirror_internal::Endpoint> endpoint = mirror_internal::ParseEndpoint(server);
    if (!endpoint.ok()) return endpoint.status();
    auto entry = std::make_unique<Impl::Server>();
    for (size_t i = 0; i < options.connections_per_server; ++i) {
      entry->connections.push_back(std::make_unique<Connection>(*endpoint, connection_options));
    }
    impl->servers_.push_back(std::move(entry));
    names.push_back(mirror_internal::Ketama::NameFor(endpoint->host, endpoint->port));
  }
  if (impl->servers_.size() > 1) impl->ketama_ = std::make_unique<mirror_internal::Ketama>(names);
  return std::unique_ptr<MemcachedClient>(new MemcachedClient(std::move(options), std::move(impl)));
}

MemcachedClient::MemcachedClient(MemcachedOptions options, std::unique_ptr<Impl> impl)
    : options_(std::move(options)), impl_(std::move(impl)) {}

MemcachedClient::~MemcachedClient() = default;

absl::StatusOr<std::optional<Item>> MemcachedClient::Get(std::string_view key) {
  absl::StatusOr<Response> r = impl_->Exchange(key, [](const WireKey& wire, RequestBatch* batch) {
    batch->Get(wire, {});
    return absl::OkStatus();
  });
  if (!r.ok()) return r.status();
  if (r->code == Code::kMiss) return std::optional<Item>();
  if (r->code != Code::kValue) return UnexpectedResponse(*r, "get");
  return std::optional<Item>(ToItem(*r));
}

absl::StatusOr<absl::flat_hash_map<std::string, Item>> MemcachedClient::GetMany(
    absl::Span<const std::string_view> keys) {
  absl::flat_hash_map<std::string, Item> found;
  if (keys.empty()) return found;
  found.reserve(keys.size());
  // Quiet gets, each with its token, then the batch's end marker: misses
  // send nothing, hits carry their token and key, the marker's answer ends
  // the batch. A long list is split over the server's connections, sent on
  // all of them before any answer is awaited: memcached serves each
  // connection on its own worker thread, and it spends more per key on a meta
  // get than the client does. So there is a part per server, or several for
  // a long list; each part's tokens are reserved on its connection, and
  // `keys_of` maps a request of the part back to its key.
  struct Part {
    Connection* connection;
    std::vector<size_t> keys_of;
    RequestBatch batch;
  };
  std::vector<Part> parts;
  std::vector<std::vector<size_t>> by_server(impl_->servers_.size());
  for (size_t i = 0; i < keys.size(); ++i) by_server[impl_->ServerIndexFor(keys[i])].push_back(i);
  constexpr size_t kMinKeysPerPart = 32;
  constexpr size_t kMaxKeyGuess = 32;  // typical keys; longer ones just regrow once
  for (size_t s = 0; s < by_server.size(); ++s) {
    const std::vector<size_t>& indexes = by_server[s];
    if (indexes.empty()) continue;
    MemcachedClient::Impl::Server& server = *impl_->servers_[s];
    const size_t count =
        std::clamp<size_t>(indexes.size() / kMinKeysPerPart, 1, server.connections.size());
    const size_t first_part = parts.size();
    Connection* const mine = &server.Pick();
    size_t first = 0;
    while (server.connections[first].get() != mine) ++first;
    for (size_t p = 0; p < count; ++p) {
      Connection* connection = server.connections[(first + p) % server.connections.size()].get();
      // Key j goes to part j * count / n: part p gets ceil((p+1)n/count) - ceil(pn/count).
      const auto ceil_div = [count](size_t x) { return (x + count - 1) / count; };
      const size_t size = ceil_div((p + 1) * indexes.size()) - ceil_div(p * indexes.size());
      parts.push_back({connection, {}, RequestBatch(connection->ReserveOpaque(size + 1))});
      parts.back().keys_of.reserve(size);
      // "mg <key> v f c t k O<token> q\r\n" is the key and about 40 bytes.
      parts.back().batch.Reserve(size, size * (kMaxKeyGuess + 40) + 64);
    }
    for (size_t j = 0; j < indexes.size(); ++j) {
      const size_t i = indexes[j];
      absl::StatusOr<WireKey> wire = impl_->Key(keys[i]);
      if (!wire.ok()) return wire.status();
      Part& part = parts[first_part + j * count / indexes.size()];
      part.batch.Get(*wire, {}, /*quiet=*/true);
      part.keys_of.push_back(i);
    }
  }
  const absl::Time deadline = impl_->Deadline();
  std::vector<std::pair<Part*, Connection::Ticket>> sent;
  absl::Status status;
  for (Part& part : parts) {
    if (!status.ok()) break;
    part.batch.EndWithMarker();
    absl::StatusOr<Connection::Ticket> ticket =
        part.connection->Send(std::move(part.batch), deadline);
    if (ticket.ok()) {
      sent.emplace_back(&part, *std::move(ticket));
    } else {
      status = ticket.status();
    }
  }
  // Every part sent is awaited, even after a failure, so that no answer is
  // left unread on a connection.
  for (auto& [part, ticket] : sent) {
    absl::StatusOr<std::vector<Response>> responses = part->connection->Wait(ticket, deadline);
    if (!responses.ok()) {
      if (status.ok()) status = responses.status();
      continue;
    }
    for (Response& r : *responses) {
      if (r.code != Code::kValue) {  // an error line: it fails the whole call
        if (status.ok()) status = UnexpectedResponse(r, "get_many");
        continue;
      }
      const std::string_view key = keys[part->keys_of[r.request]];
      found.insert_or_assign(absl::string_view(key.data(), key.size()), ToItem(r));
    }
  }
  if (!status.ok()) return status;
  return found;
}

namespace {

StoreResult ToStoreResult(Code code) {
  switch (code) {
    case Code::kHit:
      return StoreResult::kStored;
    case Code::kExists:
      return StoreResult::kExists;
    case Code::kNotFound:
      return StoreResult::kNotFound;
    default:
      return StoreResult::kNotStored;
  }
}

}  // namespace

absl::StatusOr<StoreResult> MemcachedClient::Store(std::string_view key, std::string_view value,
                                                   const WriteOptions& options, int mode,
                                                   std::optional<uint64_t> cas) {
  absl::StatusOr<Response> r = impl_->Exchange(key, [&](const WireKey& wire, RequestBatch* batch) {
    if (absl::Status s = impl_->CheckValue(wire, value.size()); !s.ok()) return s;
    absl::StatusOr<int64_t> ttl =
        mirror_internal::EncodeTtl(options.ttl.value_or(options_.default_ttl), absl::Now());
    if (!ttl.ok()) return ttl.status();
    mirror_internal::SetRequest set;
    set.value = value;
    set.client_flags = options.flags;
    set.ttl = *ttl;
    set.mode = static_cast<mirror_internal::StoreMode>(mode);
    set.compare_cas = cas;
    batch->Set(wire, set);
    return absl::OkStatus();
  });
  if (!r.ok()) return r.status();
  switch (r->code) {
    case Code::kHit:
    case Code::kNotStored:
    case Code::kExists:
    case Code::kNotFound:
      return ToStoreResult(r->code);
    default:
      return UnexpectedResponse(*r, "store");
  }
}

absl::StatusOr<StoreResult> MemcachedClient::Set(std::string_view key, std::string_view value,
                                                 WriteOptions options) {
  return Store(key, value, options, 'S', std::nullopt);
}

absl::StatusOr<StoreResult> MemcachedClient::Add(std::string_view key, std::string_view value,
                                                 WriteOptions options) {
  return Store(key, value, options, 'E', std::nullopt);
}

absl::StatusOr<StoreResult> MemcachedClient::Replace(std::string_view key, std::string_view value,
                                                     WriteOptions options) {
  return Store(key, value, options, 'R', std::nullopt);
}

absl::StatusOr<StoreResult> MemcachedClient::Append(std::string_view key, std::string_view suffix) {
  return Store(key, suffix, {}, 'A', std::nullopt);
}

absl::StatusOr<StoreResult> MemcachedClient::Prepend(std::string_view key,
                                                     std::string_view prefix) {
  return Store(key, prefix, {}, 'P', std::nullopt);
}

absl::StatusOr<StoreResult> MemcachedClient::CompareAndSwap(std::string_view key,
                                                            std::string_view value, uint64_t cas,
                                                            WriteOptions options) {
  return Store(key, value, options, 'S', cas);
}

absl::StatusOr<bool> MemcachedClient::Delete(std::string_view key) {
  absl::StatusOr<Response> r = impl_->Exchange(key, [](const WireKey& wire, RequestBatch* batch) {
    batch->Delete(wire, {});
    return absl::OkStatus();
  });
  if (!r.ok()) return r.status();
  if (r->code == Code::kHit) return true;
  if (r->code == Code::kNotFound) return false;
  return UnexpectedResponse(*r, "delete");
}

absl::StatusOr<bool> MemcachedClient::Touch(std::string_view key, absl::Duration ttl) {
  absl::StatusOr<Response> r = impl_->Exchange(key, [&](const WireKey& wire, RequestBatch* batch) {
    absl::StatusOr<int64_t> token = mirror_internal::EncodeTtl(ttl, absl::Now());
    if (!token.ok()) return token.status();
    mirror_internal::GetRequest get;
    get.value = false;
    get.touch_ttl = *token;
    batch->Get(wire, get);
    return absl::OkStatus();
  });
  if (!r.ok()) return r.status();
  if (r->code == Code::kHit) return true;
  if (r->code == Code::kMiss) return false;
  return UnexpectedResponse(*r, "touch");
}

absl::StatusOr<uint64_t> MemcachedClient::AddToCounter(std::string_view key, uint64_t delta,
                                                       bool increment) {
  absl::StatusOr<Response> r = impl_->Exchange(key, [&](const WireKey& wire, RequestBatch* batch) {
    mirror_internal::ArithmeticRequest arithmetic;
    arithmetic.increment = increment;
    arithmetic.delta = delta;
    batch->Arithmetic(wire, arithmetic);
    return absl::OkStatus();
  });
  if (!r.ok()) return r.status();
  if (r->code == Code::kNotFound) {
    return absl::NotFoundError(
        absl::StrFormat("key '%s' is not in memcached", absl::CEscape(std::string(key))));
  }
  if (r->code != Code::kValue) return UnexpectedResponse(*r, increment ? "incr" : "decr");
  uint64_t number = 0;
  if (!absl::SimpleAtoi(r->value, &number)) {
    return absl::DataLossError(absl::StrFormat("incr/decr: memcached answered '%s', not a number",
                                               absl::CEscape(r->value)));
  }
  return number;
}

absl::StatusOr<uint64_t> MemcachedClient::Increment(std::string_view key, uint64_t delta) {
  return AddToCounter(key, delta, /*increment=*/true);
}

absl::StatusOr<uint64_t> MemcachedClient::Decrement(std::string_view key, uint64_t delta) {
  return AddToCounter(key, delta, /*increment=*/false);
}

}  // namespace tiercache
