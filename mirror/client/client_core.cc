#include "client/client_core.h"

#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "validate.h"

namespace tiercache::mirror_internal {

using Code = Response::Code;

absl::Status UnexpectedResponse(const Response& r, std::string_view what) {
  const std::string asked(what);
  switch (r.code) {
    case Code::kClientError:
      if (absl::StrContains(r.message, "non-numeric")) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "%s: memcached cannot increment or decrement a non-numeric value", asked));
      }
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: memcached refused the request: CLIENT_ERROR %s", asked, r.message));
    case Code::kServerError:
      if (absl::StrContains(r.message, "out of memory")) {
        return absl::ResourceExhaustedError(
            absl::StrFormat("%s: memcached is out of memory: SERVER_ERROR %s", asked, r.message));
      }
      if (absl::StrContains(r.message, "too large")) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: memcached refused the value: SERVER_ERROR %s", asked, r.message));
      }
      return absl::InternalError(absl::StrFormat("%s: SERVER_ERROR %s", asked, r.message));
    case Code::kError:
      return absl::InternalError(
          absl::StrFormat("%s: memcached does not know the command (ERROR)", asked));
    default:
      return absl::InternalError(
          absl::StrFormat("%s: unexpected response code %d", asked, static_cast<int>(r.code)));
  }
}

namespace {

// memcached counts TTLs in whole seconds: a lease or recache window of 1.5 s
// is 2 s on the wire.
int64_t WholeSeconds(absl::Duration d) {
  return absl::ToInt64Seconds(absl::Ceil(d, absl::Seconds(1)));
}

Fetched ToFetched(Response& r) {
  Fetched fetched;
  fetched.found = r.code != Code::kMiss;
  if (!fetched.found) return fetched;
  fetched.value = std::move(r.value);
  fetched.flags = r.client_flags.value_or(0);
  fetched.cas = r.cas.value_or(0);
  fetched.remaining =
      !r.ttl.has_value() || *r.ttl < 0 ? absl::InfiniteDuration() : absl::Seconds(*r.ttl);
  fetched.won = r.won;
  fetched.lost = r.lost;
  fetched.stale = r.stale;
  return fetched;
}

// `gutter`: the lease's stub lives at most `gutter_ttl`, like every item
// written to the gutter.
GetRequest ToGetRequest(const FetchOptions& options, bool gutter = false,
                        absl::Duration gutter_ttl = absl::InfiniteDuration()) {
  GetRequest get;
  get.value = options.value;
  if (options.lease_ttl.has_value()) {
    get.vivify_ttl =
        WholeSeconds(gutter ? std::min(*options.lease_ttl, gutter_ttl) : *options.lease_ttl);
  }
  // No recache window in the gutter: every item there lives at most
  // gutter_ttl, and a window as long would send every reader to the database.
  if (options.recache_below.has_value() && !gutter) {
    get.recache_ttl = WholeSeconds(*options.recache_below);
  }
  return get;
}

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

Item Fetched::ToItem(absl::Time now) && {
  Item item;
  item.value = std::move(value);
  item.flags = flags;
  item.cas = cas;
  item.expiry = !ttl_known || remaining == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                    : now + remaining;
  return item;
}

absl::StatusOr<std::unique_ptr<ClientCore>> ClientCore::Create(const MemcachedOptions& options) {
  if (options.servers.empty()) return absl::InvalidArgumentError("no memcached servers given");
  if (options.op_timeout <= absl::ZeroDuration() ||
      options.connect_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("op_timeout and connect_timeout must be positive");
  }
  if (absl::Status s = common_internal::CheckTtl(options.default_ttl, "default_ttl"); !s.ok()) {
    return s;
  }
  if (options.connections_per_server == 0) {
    return absl::InvalidArgumentError("connections_per_server must be >= 1");
  }
  if (options.username.empty() != options.password.empty()) {
    return absl::InvalidArgumentError(
        "username and password go together (memcached -Y authentication): give both or neither");
  }
  const auto printable = [](std::string_view text) {
    return std::all_of(text.begin(), text.end(),
                       [](char c) { return c > ' ' && c < 0x7f; });  // no spaces, no controls
  };
  if (!printable(options.username)) {
    return absl::InvalidArgumentError(
        "username holds a space, a control or a non-ASCII byte (memcached -Y cannot match it)");
  }
  if (!printable(options.password)) {
    // Not quoted: a secret never appears in a message.
    return absl::InvalidArgumentError(
        "password holds a space, a control or a non-ASCII byte (memcached -Y cannot match it)");
  }
  if (options.key_prefix.size() >= kMaxWireKey) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "key_prefix is %d bytes; memcached keys are at most 250", options.key_prefix.size()));
  }
  std::unique_ptr<ClientCore> core(new ClientCore(options));
  ConnectionOptions connection_options;
  connection_options.connect_timeout = options.connect_timeout;
  connection_options.op_timeout = options.op_timeout;
  connection_options.reconnect_backoff = options.reconnect_backoff;
  connection_options.max_reconnect_backoff = options.max_reconnect_backoff;
  connection_options.max_value_size = options.max_item_size;
  connection_options.username = options.username;
  if (options.tls.enable) {
    absl::StatusOr<std::shared_ptr<TlsContext>> tls = TlsContext::Create(options.tls);
    if (!tls.ok()) return tls.status();
    connection_options.tls = *std::move(tls);
  }
  connection_options.password = options.password;
  if (!options.gutter_servers.empty() && options.gutter_ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("gutter_ttl must be positive");
  }
  for (const std::string& gutter : options.gutter_servers) {
    if (std::find(options.servers.begin(), options.servers.end(), gutter) !=
        options.servers.end()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s is both a server and a gutter server: a gutter must be a pool of its own", gutter));
    }
  }
  core->connection_options_ = connection_options;
  std::vector<std::string> names, gutter_names, configured;
  std::vector<bool> is_gutter;
  core->primaries_ = options.servers.size();
  std::vector<std::string> all = options.servers;
  all.insert(all.end(), options.gutter_servers.begin(), options.gutter_servers.end());
  for (size_t index = 0; index < all.size(); ++index) {
    const std::string& server = all[index];
    const bool gutter = index >= core->primaries_;
    absl::StatusOr<Endpoint> endpoint = ParseEndpoint(server);
    if (!endpoint.ok()) return endpoint.status();
    if (options.tls.enable && options.tls.verify_peer && endpoint->is_unix &&
        options.tls.server_name.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "TLS to the unix socket %s: set tls.server_name to the name its certificate holds",
          server));
    }
    core->endpoints_.push_back(*endpoint);
    configured.push_back(server);
    is_gutter.push_back(gutter);
    (gutter ? gutter_names : names).push_back(Ketama::NameFor(endpoint->host, endpoint->port));
  }
  HealthMonitor::Hooks hooks;
  ClientCore* const self = core.get();
  hooks.on_down = [self](size_t index, const absl::Status& why) {
    for (const auto& connection : self->servers_[index]->connections) connection->Abort(why);
  };
  hooks.probe = [self](size_t index, absl::Time down_since) {
    return self->Probe(index, down_since);
  };
  hooks.on_up = [self](size_t index) {
    for (const auto& connection : self->servers_[index]->connections) {
      connection->AllowReconnectNow();
    }
  };
  core->monitor_ =
      std::make_unique<HealthMonitor>(configured, is_gutter, options, std::move(hooks));
  for (size_t index = 0; index < all.size(); ++index) {
    auto entry = std::make_unique<Server>();
    for (size_t i = 0; i < options.connections_per_server; ++i) {
      entry->connections.push_back(std::make_unique<Connection>(
          core->endpoints_[index], connection_options, &core->monitor_->health(index)));
    }
    core->servers_.push_back(std::move(entry));
  }
  if (names.size() > 1) core->ketama_ = std::make_unique<Ketama>(names);
  if (gutter_names.size() > 1) core->gutter_ketama_ = std::make_unique<Ketama>(gutter_names);
  return core;
}

ClientCore::~ClientCore() {
  // The monitor's thread calls into the servers: stop it first.
  monitor_.reset();
}

// --- Routing and health ------------------------------------------------------

absl::StatusOr<ClientCore::Route> ClientCore::RouteFor(std::string_view key, bool write) const {
  const size_t primary = ServerIndexFor(key);
  ServerHealth& health = monitor_->health(primary);
  if (!health.down()) return Route{primary, false};
  if (servers_.size() == primaries_) return monitor_->DownStatus(primary);
  if (write && health.rejoining()) {
    return absl::UnavailableError(absl::StrFormat(
        "memcached %s is rejoining the pool (its values from before the outage are being "
        "flushed): the write is refused rather than left in the gutter",
        options_.servers[primary]));
  }
  health.CountRerouted(write);
  const size_t gutter =
      primaries_ + (gutter_ketama_ == nullptr ? 0 : gutter_ketama_->ServerFor(key));
  if (monitor_->health(gutter).down()) return monitor_->DownStatus(gutter);
  return Route{gutter, true};
}

// The key a primary keeps the time of its last rejoin flush under (no
// prefix: the flush is of the whole server, whatever prefix its users use).
constexpr std::string_view kRejoinKey = "tiercache:rejoined";

absl::Status ClientCore::Probe(size_t index, absl::Time down_since) {
  // A connection of its own: the server's connections stay closed (and its
  // keys in the gutter) until the probe and the rejoin step are done.
  Connection probe(endpoints_[index], connection_options_);
  RequestBatch batch(probe.ReserveOpaque(1));
  batch.EndWithMarker();
  absl::StatusOr<std::vector<Response>> answered =
      probe.Call(std::move(batch), absl::Now() + options_.connect_timeout + options_.op_timeout);
  if (!answered.ok()) return answered.status();
  if (index >= primaries_ || servers_.size() == primaries_) return absl::OkStatus();
  return Rejoin(probe, index, down_since);
}

// Why a rejoin step. While this primary was down, writes and deletes of its
// keys went to the gutter; if it was hung rather than restarted (SIGSTOP, a
// partition), it still holds the values from before, which those writes
// replaced or deleted. Served again, they would be stale for as long as they
// live. So before any of its keys are sent back to it, this client makes
// sure the server was flushed after both the start of this client's outage
// (no value from before it survives) and this client's last write to the
// gutter (no value this client replaced survives), flushing it itself if
// not (memcached 1.6 flushes by CAS: nothing stored after the flush is lost).
//
// The clients that saw one outage share the work through kRejoinKey on the
// server: "<ms>" is the time of its last flush; "pending:<ms>" is a flush
// being made, claimed by compare-and-swap (or add), so that of several
// clients rejoining together one flushes and the others wait for its time
// rather than flushing again after the first has marked the server up and
// written to it. (A claim expires in kClaimTtl if its client dies. Only a
// client that claims in the microseconds between another's flush_all and its
// setting the time, both in one pipelined batch, flushes twice: that costs
// loads, never coherence.) Writes of the server's keys are refused while
// this runs, and the step first waits op_timeout for writes already sent to
// the gutter to land. Clients' wall clocks are assumed within kClockSkew.
absl::Status ClientCore::FlushRefused(size_t index) const {
  return absl::FailedPreconditionError(absl::StrFormat(
      "memcached %s refuses flush_all (started with -F): with a gutter pool a returning server "
      "must be flushed of its values from before the outage, so it stays down and its keys stay "
      "in the gutter",
      endpoints_[index].name));
}

absl::Status ClientCore::Rejoin(Connection& connection, size_t index, absl::Time down_since) {
  constexpr absl::Duration kClockSkew = absl::Seconds(1);
  constexpr int64_t kClaimTtlSeconds = 5;
  constexpr absl::string_view kPending = "pending:";
  ServerHealth& health = monitor_->health(index);
  if (health.flush_refused()) return FlushRefused(index);
  health.set_rejoining(true);  // cleared by the monitor after the probe
  absl::SleepFor(options_.op_timeout);
  const int64_t last_write_ms = health.last_gutter_write_ms();
  const int64_t must_follow_ms =
      std::max(absl::ToUnixMillis(down_since),
               last_write_ms == 0 ? 0 : last_write_ms + absl::ToInt64Milliseconds(kClockSkew));
  const WireKey marker{std::string(kRejoinKey), false};
  // Another client's flush gets a few round trips' time to finish.
  const absl::Time give_up = absl::Now() + 4 * options_.op_timeout;
  while (absl::Now() < give_up) {
    const absl::Time deadline = absl::Now() + options_.op_timeout;
    RequestBatch read(connection.ReserveOpaque(1));
    read.Get(marker, GetRequest{});
    absl::StatusOr<std::vector<Response>> last = connection.Call(std::move(read), deadline);
    if (!last.ok()) return last.status();
    const bool found = !last->empty() && last->front().code == Code::kValue;
    const std::string value = found ? last->front().value : "";
    int64_t flushed_ms = 0;
    if (found && absl::SimpleAtoi(value, &flushed_ms) && flushed_ms >= must_follow_ms) {
      return absl::OkStatus();  // flushed late enough, by this client or another
    }
    if (absl::StartsWith(value, kPending)) {  // another client is flushing
      absl::SleepFor(absl::Milliseconds(5));
      continue;
    }
    // Claim the flush, then make it and leave its time.
    const std::string now_ms = absl::StrCat(absl::ToUnixMillis(absl::Now()));
    const std::string claim = absl::StrCat(kPending, now_ms);
    RequestBatch claiming(connection.ReserveOpaque(1));
    SetRequest set_claim;
    set_claim.value = claim;
    set_claim.ttl = kClaimTtlSeconds;
    if (found) {
      set_claim.compare_cas = last->front().cas;
    } else {
      set_claim.mode = StoreMode::kAdd;
    }
    claiming.Set(marker, set_claim);
    absl::StatusOr<std::vector<Response>> claimed = connection.Call(std::move(claiming), deadline);
    if (!claimed.ok()) return claimed.status();
    if (claimed->empty() || claimed->front().code != Code::kHit) continue;  // another's claim
    RequestBatch flush(connection.ReserveOpaque(2));
    flush.FlushAll();
    SetRequest set_time;
    set_time.value = now_ms;
    set_time.ttl = 0;
    flush.Set(marker, set_time);
    absl::StatusOr<std::vector<Response>> done = connection.Call(std::move(flush), deadline);
    if (!done.ok()) return done.status();
    for (const Response& r : *done) {
      if (r.code == Code::kClientError && r.message == "flush_all not allowed") {
        health.set_flush_refused();
        return FlushRefused(index);
      }
      if (r.code != Code::kOk && r.code != Code::kHit) {
        return UnexpectedResponse(r, "rejoin flush");
      }
    }
    return absl::OkStatus();
  }
  return absl::UnavailableError(absl::StrFormat(
      "memcached %s: another client's rejoin flush did not finish in time; probed again later",
      endpoints_[index].name));
}

// --- Validation --------------------------------------------------------------

absl::StatusOr<WireKey> ClientCore::Key(std::string_view key) const {
  return EncodeKey(options_.key_prefix, key);
}

absl::Status ClientCore::CheckValue(const WireKey& key, size_t value_size) const {
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

absl::StatusOr<int64_t> ClientCore::TtlToken(std::optional<absl::Duration> ttl, bool gutter) const {
  absl::Duration d = ttl.value_or(options_.default_ttl);
  if (gutter) d = std::min(d, options_.gutter_ttl);
  // Only a TTL over 30 days becomes an absolute time; the clock is read for
  // it alone (every replicated write passes here).
  const bool absolute = d != absl::InfiniteDuration() && d > absl::Seconds(kMaxRelativeTtlSeconds);
  return EncodeTtl(d, absolute ? absl::Now() : absl::UnixEpoch());
}

absl::Status ClientCore::CheckWrite(std::string_view key, size_t value_size,
                                    std::optional<absl::Duration> ttl) const {
  absl::StatusOr<WireKey> wire = Key(key);
  if (!wire.ok()) return wire.status();
  if (absl::Status s = CheckValue(*wire, value_size); !s.ok()) return s;
  return TtlToken(ttl).status();
}

// --- Single requests ---------------------------------------------------------

template <typename EncodeFn>
absl::StatusOr<Response> ClientCore::Exchange(std::string_view key, bool write, EncodeFn&& encode) {
  absl::StatusOr<WireKey> wire = Key(key);
  if (!wire.ok()) return wire.status();
  const absl::Time deadline = Deadline();
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<Route> route = RouteFor(key, write);
    if (!route.ok()) return route.status();
    Connection& connection = servers_[route->server]->Pick();
    RequestBatch batch(connection.ReserveOpaque(1));
    if (absl::Status s = encode(*wire, route->gutter, &batch); !s.ok()) return s;
    absl::StatusOr<std::vector<Response>> responses = connection.Call(std::move(batch), deadline);
    if (responses.ok()) return std::move(responses->front());
    // The failure that marked the primary down (a refused connection: quick,
    // and the request was not sent) is answered by the gutter instead. Once,
    // and within the call's deadline: a timeout has spent it. A request that
    // did reach the dying server is no worse for being sent again: what it
    // did there is lost with the server or flushed when it rejoins.
    if (attempt > 0 || route->gutter || servers_.size() == primaries_ ||
        !absl::IsUnavailable(responses.status()) || absl::Now() >= deadline ||
        !monitor_->health(route->server).down()) {
      return responses.status();
    }
  }
}

absl::StatusOr<Fetched> ClientCore::Fetch(std::string_view key, const FetchOptions& options) {
  absl::StatusOr<Response> r =
      Exchange(key, /*write=*/false, [&](const WireKey& wire, bool gutter, RequestBatch* batch) {
        batch->Get(wire, ToGetRequest(options, gutter, options_.gutter_ttl));
        return absl::OkStatus();
      });
  if (!r.ok()) return r.status();
  if (r->code != Code::kValue && r->code != Code::kHit && r->code != Code::kMiss) {
    return UnexpectedResponse(*r, "get");
  }
  return ToFetched(*r);
}

absl::StatusOr<Stored> ClientCore::Store(std::string_view key, std::string_view value,
                                         const WriteOptions& options, StoreMode mode,
                                         std::optional<uint64_t> cas) {
  absl::StatusOr<Response> r =
      Exchange(key, /*write=*/true, [&](const WireKey& wire, bool gutter, RequestBatch* batch) {
        if (absl::Status s = CheckValue(wire, value.size()); !s.ok()) return s;
        absl::StatusOr<int64_t> ttl = TtlToken(options.ttl, gutter);
        if (!ttl.ok()) return ttl.status();
        SetRequest set;
        set.value = value;
        set.client_flags = options.flags;
        set.ttl = *ttl;
        set.mode = mode;
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
      return Stored{ToStoreResult(r->code), r->cas.value_or(0)};
    default:
      return UnexpectedResponse(*r, "store");
  }
}

absl::StatusOr<bool> ClientCore::Delete(std::string_view key, std::optional<uint64_t> cas) {
  absl::StatusOr<Response> r =
      Exchange(key, /*write=*/true, [&](const WireKey& wire, bool /*gutter*/, RequestBatch* batch) {
        DeleteRequest del;
        del.compare_cas = cas;
        batch->Delete(wire, del);
        return absl::OkStatus();
      });
  if (!r.ok()) return r.status();
  if (r->code == Code::kHit) return true;
  if (r->code == Code::kNotFound || r->code == Code::kExists) return false;
  return UnexpectedResponse(*r, "delete");
}

absl::StatusOr<bool> ClientCore::Touch(std::string_view key, absl::Duration ttl) {
  absl::StatusOr<Response> r =
      Exchange(key, /*write=*/true, [&](const WireKey& wire, bool gutter, RequestBatch* batch) {
        absl::StatusOr<int64_t> token = TtlToken(ttl, gutter);
        if (!token.ok()) return token.status();
        GetRequest get;
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

absl::StatusOr<uint64_t> ClientCore::Arithmetic(std::string_view key, uint64_t delta,
                                                bool increment) {
  absl::StatusOr<Response> r =
      Exchange(key, /*write=*/true, [&](const WireKey& wire, bool /*gutter*/, RequestBatch* batch) {
        ArithmeticRequest arithmetic;
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

// --- Pipelined batches -------------------------------------------------------

absl::StatusOr<std::vector<Fetched>> ClientCore::FetchMany(absl::Span<const std::string_view> keys,
                                                           const FetchOptions& options) {
  std::vector<Fetched> found(keys.size());
  if (keys.empty()) return found;
  // The keys are split into parts, each sent on its own connection before
  // any answer is awaited: memcached serves each connection on its own
  // worker thread. So there is a part per server, or several for a long
  // list; each part's tokens are reserved on its connection, and `keys_of`
  // maps a key's place in the part back to its place in `keys`.
  //
  // A part is either a classic `gets` of its keys (when no TTL, lease or
  // recache is asked for and no key needs base64: memcached spends less CPU
  // per key on it) or a quiet `mg` per key; either way it ends
  // with the batch's tagged end marker. Misses send nothing; hits carry their
  // key (and, for `mg`, their token), which RequestBatch checks.
  struct Part {
    Connection* connection;
    std::vector<size_t> keys_of;
    std::vector<WireKey> wire;
    bool classic = true;
    bool gutter = false;
  };
  std::vector<Part> parts;
  std::vector<std::vector<size_t>> by_server(servers_.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    absl::StatusOr<Route> route = RouteFor(keys[i], /*write=*/false);
    if (!route.ok()) return route.status();
    by_server[route->server].push_back(i);
  }
  const bool classic_allowed = options.value && !options.ttl && !options.lease_ttl.has_value() &&
                               !options.recache_below.has_value();
  constexpr size_t kMinKeysPerPart = 32;
  for (size_t s = 0; s < by_server.size(); ++s) {
    const std::vector<size_t>& indexes = by_server[s];
    if (indexes.empty()) continue;
    Server& server = *servers_[s];
    const size_t count =
        std::clamp<size_t>(indexes.size() / kMinKeysPerPart, 1, server.connections.size());
    const size_t first_part = parts.size();
    Connection* const mine = &server.Pick();
    size_t first = 0;
    while (server.connections[first].get() != mine) ++first;
    for (size_t p = 0; p < count; ++p) {
      Part part;
      part.connection = server.connections[(first + p) % server.connections.size()].get();
      part.classic = classic_allowed;
      part.gutter = s >= primaries_;
      parts.push_back(std::move(part));
    }
    for (size_t j = 0; j < indexes.size(); ++j) {
      const size_t i = indexes[j];
      absl::StatusOr<WireKey> wire = Key(keys[i]);
      if (!wire.ok()) return wire.status();
      Part& part = parts[first_part + j * count / indexes.size()];
      if (wire->base64) part.classic = false;
      part.wire.push_back(*std::move(wire));
      part.keys_of.push_back(i);
    }
  }
  const GetRequest get = ToGetRequest(options);
  const GetRequest gutter_get = ToGetRequest(options, /*gutter=*/true, options_.gutter_ttl);
  // memcached reads a `gets` line before it answers any of it: a bounded
  // list keeps the line, and the server's buffering of it, small.
  constexpr size_t kMaxKeysPerGets = 100;
  const absl::Time deadline = Deadline();
  std::vector<std::pair<Part*, Connection::Ticket>> sent;
  absl::Status status;
  for (Part& part : parts) {
    if (!status.ok()) break;
    const size_t requests = part.classic
                                ? (part.wire.size() + kMaxKeysPerGets - 1) / kMaxKeysPerGets
                                : part.wire.size();
    RequestBatch batch(part.connection->ReserveOpaque(requests + 1));
    // "mg <key> v f c t k O<token> q\r\n" is the key and about 40 bytes.
    batch.Reserve(requests, part.wire.size() * (part.classic ? 1 : 40) + 64);
    if (part.classic) {
      const absl::Span<const WireKey> all(part.wire);
      for (size_t k = 0; k < all.size(); k += kMaxKeysPerGets) {
        batch.MultiGet(all.subspan(k, kMaxKeysPerGets));
      }
    } else {
      for (const WireKey& wire : part.wire) {
        batch.Get(wire, part.gutter ? gutter_get : get, /*quiet=*/true);
      }
    }
    batch.EndWithMarker();
    absl::StatusOr<Connection::Ticket> ticket = part.connection->Send(std::move(batch), deadline);
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
      if (r.code == Code::kClassicValue) {
        // Request k of the part is its k-th gets, of keys k*100 .. k*100+99.
        const size_t place = r.request * kMaxKeysPerGets + r.key_index;
        Fetched& f = found[part->keys_of[place]];
        f.found = true;
        f.value = std::move(r.value);
        f.flags = r.client_flags.value_or(0);
        f.cas = r.cas.value_or(0);
        f.ttl_known = false;
        continue;
      }
      if (r.code != Code::kValue && r.code != Code::kHit) {  // an error line fails the call
        if (status.ok()) status = UnexpectedResponse(r, "get_many");
        continue;
      }
      found[part->keys_of[r.request]] = ToFetched(r);
    }
  }
  if (!status.ok()) return status;
  return found;
}

absl::StatusOr<PreparedWrite> ClientCore::PrepareWrite(PreparedWrite::Kind kind,
                                                       std::string_view key, std::string_view value,
                                                       const WriteOptions& options) const {
  PreparedWrite write;
  write.kind = kind;
  absl::StatusOr<WireKey> wire = Key(key);
  if (!wire.ok()) return wire.status();
  write.key = *std::move(wire);
  if (kind == PreparedWrite::Kind::kSet) {
    if (absl::Status s = CheckValue(write.key, value.size()); !s.ok()) return s;
    write.value = value;
    write.flags = options.flags;
  }
  // While the key's primary is down the write goes to the gutter. Without a
  // gutter pool it stays queued for the primary: its batch fails if the
  // server is still down when it is sent.
  Route route{ServerIndexFor(key), false};
  // Read before routing: a transition in between makes the write's epoch
  // old, and its batch is dropped rather than sent where it no longer
  // belongs.
  const uint64_t primary_epoch = RoutingEpoch(route.server);
  const uint64_t pool_epoch = monitor_->epoch();
  if (servers_.size() > primaries_) {
    absl::StatusOr<Route> routed = RouteFor(key, /*write=*/true);
    if (!routed.ok()) return routed.status();
    route = *routed;
  }
  write.epoch = route.gutter ? pool_epoch : primary_epoch;
  if (kind != PreparedWrite::Kind::kDelete) {
    absl::StatusOr<int64_t> ttl = TtlToken(options.ttl, route.gutter);
    if (!ttl.ok()) return ttl.status();
    write.ttl_token = *ttl;
  }
  write.server = route.server;
  // "ms <key> <len> F<flags> T<ttl> MS O<token> q\r\n<value>\r\n" is about 50
  // bytes besides the key and value.
  write.encoded_size = write.key.text.size() + write.value.size() + 64;
  return write;
}

void WriteBatch::Add(const PreparedWrite& write) {
  switch (write.kind) {
    case PreparedWrite::Kind::kSet: {
      SetRequest set;
      set.value = write.value;
      set.client_flags = write.flags;
      set.ttl = write.ttl_token;
      requests_.Set(write.key, set, /*quiet=*/true);
      break;
    }
    case PreparedWrite::Kind::kDelete:
      requests_.Delete(write.key, {}, /*quiet=*/true);
      break;
    case PreparedWrite::Kind::kTouch: {
      GetRequest touch;
      touch.value = false;
      touch.touch_ttl = write.ttl_token;
      requests_.Get(write.key, touch, /*quiet=*/true);
      break;
    }
  }
}

WriteBatch ClientCore::NewWriteBatch(size_t server, uint64_t epoch, size_t capacity,
                                     size_t expected_bytes) {
  WriteBatch batch(server, epoch, servers_[server]->connections.front().get(), capacity);
  if (expected_bytes > 0) batch.requests_.Reserve(capacity, expected_bytes);
  return batch;
}

WriteTicket ClientCore::Send(WriteBatch batch) {
  WriteTicket ticket;
  ticket.connection_ = batch.connection_;
  ticket.size_ = batch.size();
  // Without a gutter pool a transition changes no write's destination.
  if (servers_.size() > primaries_ && batch.epoch_ != RoutingEpoch(batch.server_)) {
    ticket.send_status_ = absl::UnavailableError(absl::StrFormat(
        "memcached %s: a server of the pool went down or came back after these writes were "
        "queued; they are dropped rather than sent where their keys may no longer be read",
        endpoints_[batch.server_].name));
    return ticket;
  }
  batch.requests_.EndWithMarker();
  absl::StatusOr<Connection::Ticket> sent =
      batch.connection_->Send(std::move(batch.requests_), Deadline());
  if (sent.ok()) {
    ticket.exchange_ = *std::move(sent);
  } else {
    ticket.send_status_ = sent.status();
  }
  return ticket;
}

BatchOutcome ClientCore::Await(WriteTicket& ticket) {
  BatchOutcome outcome;
  outcome.status = ticket.send_status_;
  if (ticket.exchange_ == nullptr) return outcome;
  absl::StatusOr<std::vector<Response>> responses =
      ticket.connection_->Wait(ticket.exchange_, Deadline());
  ticket.exchange_ = nullptr;
  if (!responses.ok()) {
    outcome.status = responses.status();
    return outcome;
  }
  for (const Response& r : *responses) {
    // A quiet delete of a missing key is fine, and so is a touch's hit.
    if (r.code == Code::kHit || r.code == Code::kNotFound) continue;
    if (r.request != Response::kUntagged) {
      outcome.refused.emplace_back(r.request, absl::InternalError(absl::StrFormat(
                                                  "memcached refused the write (%s)",
                                                  r.message.empty() ? "not stored" : r.message)));
    } else if (outcome.status.ok()) {
      // Error lines carry no tag: the write they belong to is unknown.
      outcome.status = UnexpectedResponse(r, "a replicated write of the batch");
    }
  }
  return outcome;
}

}  // namespace tiercache::mirror_internal
