#include "client/client_core.h"

#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "check.h"
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
  core->connection_options_ = connection_options;
  HealthMonitor::Hooks hooks;
  ClientCore* const self = core.get();
  // The hooks run on the monitor's thread; a server's id stays valid in
  // every later topology.
  hooks.on_down = [self](size_t id, const absl::Status& why) {
    for (const auto& connection : self->Current().by_id[id]->connections) connection->Abort(why);
  };
  hooks.probe = [self](size_t id, absl::Time down_since) { return self->Probe(id, down_since); };
  hooks.on_up = [self](size_t id) {
    for (const auto& connection : self->Current().by_id[id]->connections) {
      connection->AllowReconnectNow();
    }
  };
  core->monitor_ = std::make_unique<HealthMonitor>(options, std::move(hooks));
  // The first topology: the gutter pool, then the primaries through
  // SetServers, which checks them as it will check every later list.
  auto first = std::make_unique<Topology>();
  std::vector<std::string> gutter_names;
  for (const std::string& name : options.gutter_servers) {
    absl::StatusOr<std::shared_ptr<Server>> server =
        core->NewServer(name, /*gutter=*/true, first->by_id.size());
    if (!server.ok()) return server.status();
    first->gutters.push_back((*server)->id);
    gutter_names.push_back(Ketama::NameFor((*server)->endpoint.host, (*server)->endpoint.port));
    first->by_id.push_back(*std::move(server));
  }
  if (gutter_names.size() > 1) first->gutter_ketama = std::make_unique<Ketama>(gutter_names);
  {
    common_internal::MutexLock lock(&core->topology_mu_);
    core->topology_.store(first.get(), std::memory_order_release);
    core->topologies_.push_back(std::move(first));
  }
  if (absl::Status s = core->SetServers(options.servers); !s.ok()) return s;
  return core;
}

absl::Status ClientCore::CheckTlsTarget(const Endpoint& endpoint) const {
  if (options_.tls.enable && options_.tls.verify_peer && endpoint.is_unix &&
      options_.tls.server_name.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "TLS to the unix socket %s: set tls.server_name to the name its certificate holds",
        endpoint.name));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<ClientCore::Server>> ClientCore::NewServer(const std::string& name,
                                                                          bool gutter, size_t id) {
  absl::StatusOr<Endpoint> endpoint = ParseEndpoint(name);
  if (!endpoint.ok()) return endpoint.status();
  if (absl::Status s = CheckTlsTarget(*endpoint); !s.ok()) return s;
  auto server = std::make_shared<Server>();
  server->name = name;
  server->endpoint = *std::move(endpoint);
  server->gutter = gutter;
  server->id = monitor_->Add(name, gutter);
  TIERCACHE_ASSERT(server->id == id, "the monitor's ids and the topology's differ");
  server->health = &monitor_->health(server->id);
  for (size_t i = 0; i < options_.connections_per_server; ++i) {
    server->connections.push_back(
        std::make_unique<Connection>(server->endpoint, connection_options_, server->health));
  }
  return server;
}

absl::Status ClientCore::SetServers(const std::vector<std::string>& servers) {
  if (servers.empty()) return absl::InvalidArgumentError("no memcached servers given");
  common_internal::MutexLock lock(&topology_mu_);
  const Topology& old = Current();
  for (size_t i = 0; i < servers.size(); ++i) {
    if (std::find(servers.begin(), servers.begin() + i, servers[i]) != servers.begin() + i) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s is listed twice in the servers", servers[i]));
    }
    for (size_t id : old.gutters) {
      if (old.by_id[id]->name == servers[i]) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s is both a server and a gutter server: a gutter must be a pool of its own",
            servers[i]));
      }
    }
  }
  // The same list again (service discovery polling): nothing to change.
  if (old.primaries.size() == servers.size()) {
    bool same = true;
    for (size_t i = 0; i < servers.size(); ++i) {
      same = same && old.by_id[old.primaries[i]]->name == servers[i];
    }
    if (same) return absl::OkStatus();
  }
  auto next = std::make_unique<Topology>();
  next->version = old.version + 1;
  next->by_id = old.by_id;
  next->gutters = old.gutters;
  if (old.gutter_ketama != nullptr) {
    std::vector<std::string> gutter_names;
    for (size_t id : old.gutters) {
      const Endpoint& e = old.by_id[id]->endpoint;
      gutter_names.push_back(Ketama::NameFor(e.host, e.port));
    }
    next->gutter_ketama = std::make_unique<Ketama>(gutter_names);
  }
  for (const std::string& name : servers) {  // all checked before any is made
    absl::StatusOr<Endpoint> endpoint = ParseEndpoint(name);
    if (!endpoint.ok()) return endpoint.status();
    if (absl::Status s = CheckTlsTarget(*endpoint); !s.ok()) return s;
  }
  std::vector<std::string> names;
  for (const std::string& name : servers) {
    // A server that stays keeps its connections and its health.
    size_t id = next->by_id.size();
    for (size_t kept : old.primaries) {
      if (old.by_id[kept]->name == name) id = kept;
    }
    if (id == next->by_id.size()) {
      absl::StatusOr<std::shared_ptr<Server>> server = NewServer(name, /*gutter=*/false, id);
      TIERCACHE_ASSERT(server.ok(), "a server name checked above was refused");
      if (!server.ok()) return server.status();
      next->by_id.push_back(*std::move(server));
    }
    next->primaries.push_back(id);
    const Endpoint& e = next->by_id[id]->endpoint;
    names.push_back(Ketama::NameFor(e.host, e.port));
  }
  if (names.size() > 1) next->ketama = std::make_unique<Ketama>(names);
  const Topology* published = next.get();
  topologies_.push_back(std::move(next));
  topology_.store(published, std::memory_order_release);
  // Removed servers: calls already on them finish; their sockets close once
  // idle and are not reopened, and the monitor forgets them.
  for (size_t id : old.primaries) {
    if (std::find(published->primaries.begin(), published->primaries.end(), id) ==
        published->primaries.end()) {
      monitor_->Retire(id);
      for (const auto& connection : published->by_id[id]->connections) connection->Retire();
    }
  }
  return absl::OkStatus();
}

ClientCore::~ClientCore() {
  // The monitor's thread calls into the servers: stop it before they go.
  if (monitor_ != nullptr) monitor_->Stop();
}

std::vector<ServerStatus> ClientCore::ServerStates() const {
  const Topology& t = Current();
  std::vector<ServerStatus> states;
  for (size_t id : t.primaries) states.push_back(monitor_->Status(id));
  for (size_t id : t.gutters) states.push_back(monitor_->Status(id));
  return states;
}

uint64_t ClientCore::RoutingEpoch(size_t id) const {
  const Server& server = *Current().by_id[id];
  return server.gutter ? monitor_->epoch() : server.health->transitions();
}

// --- Routing and health ------------------------------------------------------

absl::StatusOr<ClientCore::Route> ClientCore::RouteFor(std::string_view key, bool write) const {
  return RouteIn(Current(), key, write);
}

absl::StatusOr<ClientCore::Route> ClientCore::RouteIn(const Topology& t, std::string_view key,
                                                      bool write) const {
  const size_t primary = t.primaries[t.PrimaryFor(key)];
  const Server& server = *t.by_id[primary];
  if (!server.health->down()) return Route{primary, false};
  if (t.gutters.empty()) return monitor_->DownStatus(primary);
  if (write && server.health->rejoining()) {
    return absl::UnavailableError(absl::StrFormat(
        "memcached %s is rejoining the pool (its values from before the outage are being "
        "flushed): the write is refused rather than left in the gutter",
        server.name));
  }
  server.health->CountRerouted(write);
  const size_t gutter = t.gutters[t.gutter_ketama == nullptr ? 0 : t.gutter_ketama->ServerFor(key)];
  if (t.by_id[gutter]->health->down()) return monitor_->DownStatus(gutter);
  return Route{gutter, true};
}

// The key a primary keeps the time of its last rejoin flush under (no
// prefix: the flush is of the whole server, whatever prefix its users use).
constexpr std::string_view kRejoinKey = "tiercache:rejoined";

absl::Status ClientCore::Probe(size_t id, absl::Time down_since) {
  const Topology& t = Current();
  const Server& server = *t.by_id[id];
  // A connection of its own: the server's connections stay closed (and its
  // keys in the gutter) until the probe and the rejoin step are done.
  Connection probe(server.endpoint, connection_options_);
  RequestBatch batch(probe.ReserveOpaque(1));
  batch.EndWithMarker();
  absl::StatusOr<std::vector<Response>> answered =
      probe.Call(std::move(batch), absl::Now() + options_.connect_timeout + options_.op_timeout);
  if (!answered.ok()) return answered.status();
  if (server.gutter || t.gutters.empty()) return absl::OkStatus();
  return Rejoin(probe, server, down_since);
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
absl::Status ClientCore::FlushRefused(const Server& server) const {
  return absl::FailedPreconditionError(absl::StrFormat(
      "memcached %s refuses flush_all (started with -F): with a gutter pool a returning server "
      "must be flushed of its values from before the outage, so it stays down and its keys stay "
      "in the gutter",
      server.name));
}

absl::Status ClientCore::Rejoin(Connection& connection, const Server& server,
                                absl::Time down_since) {
  constexpr absl::Duration kClockSkew = absl::Seconds(1);
  constexpr int64_t kClaimTtlSeconds = 5;
  constexpr absl::string_view kPending = "pending:";
  ServerHealth& health = *server.health;
  if (health.flush_refused()) return FlushRefused(server);
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
        return FlushRefused(server);
      }
      if (r.code != Code::kOk && r.code != Code::kHit) {
        return UnexpectedResponse(r, "rejoin flush");
      }
    }
    return absl::OkStatus();
  }
  return absl::UnavailableError(absl::StrFormat(
      "memcached %s: another client's rejoin flush did not finish in time; probed again later",
      server.name));
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
absl::StatusOr<Response> ClientCore::Exchange(L2Op op, std::string_view key, bool write,
                                              EncodeFn&& encode) {
  absl::StatusOr<WireKey> wire = Key(key);
  if (!wire.ok()) return wire.status();
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + options_.op_timeout;
  const ScopedLatency recorded(LatencyRecorderIfOn(), op, start);
  for (int attempt = 0;; ++attempt) {
    const Topology& t = Current();
    absl::StatusOr<Route> route = RouteIn(t, key, write);
    if (!route.ok()) return route.status();
    Server& server = *t.by_id[route->server];
    Connection& connection = server.Pick();
    RequestBatch batch(connection.ReserveOpaque(1));
    if (absl::Status s = encode(*wire, route->gutter, &batch); !s.ok()) return s;
    absl::StatusOr<std::vector<Response>> responses = connection.Call(std::move(batch), deadline);
    if (responses.ok()) return std::move(responses->front());
    // The failure that marked the primary down (a refused connection: quick,
    // and the request was not sent) is answered by the gutter instead. Once,
    // and within the call's deadline: a timeout has spent it. A request that
    // did reach the dying server is no worse for being sent again: what it
    // did there is lost with the server or flushed when it rejoins.
    // Likewise a call that picked a server just before SetServers removed it.
    const bool moved = Current().version != t.version;
    if (attempt > 0 || route->gutter || !absl::IsUnavailable(responses.status()) ||
        absl::Now() >= deadline || !(moved || (!t.gutters.empty() && server.health->down()))) {
      return responses.status();
    }
  }
}

absl::StatusOr<Fetched> ClientCore::Fetch(std::string_view key, const FetchOptions& options) {
  absl::StatusOr<Response> r =
      Exchange(options.value ? L2Op::kGet : L2Op::kRevalidation, key, /*write=*/false,
               [&](const WireKey& wire, bool gutter, RequestBatch* batch) {
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
  absl::StatusOr<Response> r = Exchange(
      L2Op::kSet, key, /*write=*/true, [&](const WireKey& wire, bool gutter, RequestBatch* batch) {
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
      Exchange(L2Op::kDelete, key, /*write=*/true,
               [&](const WireKey& wire, bool /*gutter*/, RequestBatch* batch) {
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
  absl::StatusOr<Response> r = Exchange(L2Op::kTouch, key, /*write=*/true,
                                        [&](const WireKey& wire, bool gutter, RequestBatch* batch) {
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
      Exchange(L2Op::kArithmetic, key, /*write=*/true,
               [&](const WireKey& wire, bool /*gutter*/, RequestBatch* batch) {
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
  const ScopedLatency recorded(LatencyRecorderIfOn(), L2Op::kGetMany, absl::Now());
  const absl::Time deadline = Deadline();
  // As a single call is (Exchange): the keys of a primary found refusing
  // connections, which marked it down, or of a server SetServers removed
  // meanwhile, are asked again where they are placed now (the gutter, the
  // new pool). Once, and within the deadline.
  FetchAgain again;
  absl::Status status =
      FetchOnce(Current(), keys, /*only=*/nullptr, options, deadline, &found, &again);
  if (status.ok() && !again.keys.empty()) {
    // The other parts' waits may have used up the deadline: then the first
    // failure stands (a batch sent now could not be awaited).
    status = absl::Now() < deadline ? FetchOnce(Current(), keys, &again.keys, options, deadline,
                                                &found, /*again=*/nullptr)
                                    : again.why;
  }
  if (!status.ok()) return status;
  return found;
}

absl::Status ClientCore::FetchOnce(const Topology& t, absl::Span<const std::string_view> keys,
                                   const std::vector<size_t>* only, const FetchOptions& options,
                                   absl::Time deadline, std::vector<Fetched>* found_out,
                                   FetchAgain* again) {
  std::vector<Fetched>& found = *found_out;
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
    Server* server;
    std::vector<size_t> keys_of;
    std::vector<WireKey> wire;
    bool classic = true;
  };
  std::vector<Part> parts;
  std::vector<std::vector<size_t>> by_server(t.by_id.size());
  const size_t wanted = only == nullptr ? keys.size() : only->size();
  for (size_t n = 0; n < wanted; ++n) {
    const size_t i = only == nullptr ? n : (*only)[n];
    absl::StatusOr<Route> route = RouteIn(t, keys[i], /*write=*/false);
    if (!route.ok()) return route.status();
    by_server[route->server].push_back(i);
  }
  const bool classic_allowed = options.value && !options.ttl && !options.lease_ttl.has_value() &&
                               !options.recache_below.has_value();
  constexpr size_t kMinKeysPerPart = 32;
  for (size_t s = 0; s < by_server.size(); ++s) {
    const std::vector<size_t>& indexes = by_server[s];
    if (indexes.empty()) continue;
    Server& server = *t.by_id[s];
    const size_t count =
        std::clamp<size_t>(indexes.size() / kMinKeysPerPart, 1, server.connections.size());
    const size_t first_part = parts.size();
    Connection* const mine = &server.Pick();
    size_t first = 0;
    while (server.connections[first].get() != mine) ++first;
    for (size_t p = 0; p < count; ++p) {
      Part part;
      part.connection = server.connections[(first + p) % server.connections.size()].get();
      part.server = &server;
      part.classic = classic_allowed;
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
  // A part that failed before any answer, in a way another server answers
  // (see FetchMany): its keys go to `again` rather than fail the call.
  auto answered_elsewhere = [&](const Part& part, const absl::Status& why) {
    if (again == nullptr || part.server->gutter || !absl::IsUnavailable(why) ||
        absl::Now() >= deadline) {
      return false;
    }
    const bool moved = Current().version != t.version;
    if (!moved && (t.gutters.empty() || !part.server->health->down())) return false;
    again->keys.insert(again->keys.end(), part.keys_of.begin(), part.keys_of.end());
    if (again->why.ok()) again->why = why;
    return true;
  };
  const GetRequest get = ToGetRequest(options);
  const GetRequest gutter_get = ToGetRequest(options, /*gutter=*/true, options_.gutter_ttl);
  // memcached reads a `gets` line before it answers any of it: a bounded
  // list keeps the line, and the server's buffering of it, small.
  constexpr size_t kMaxKeysPerGets = 100;
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
        batch.Get(wire, part.server->gutter ? gutter_get : get, /*quiet=*/true);
      }
    }
    batch.EndWithMarker();
    absl::StatusOr<Connection::Ticket> ticket = part.connection->Send(std::move(batch), deadline);
    if (ticket.ok()) {
      sent.emplace_back(&part, *std::move(ticket));
    } else if (!answered_elsewhere(part, ticket.status())) {
      status = ticket.status();
    }
  }
  // Every part sent is awaited, even after a failure, so that no answer is
  // left unread on a connection.
  for (auto& [part, ticket] : sent) {
    absl::StatusOr<std::vector<Response>> responses = part->connection->Wait(ticket, deadline);
    if (!responses.ok()) {
      if (status.ok() && !answered_elsewhere(*part, responses.status())) {
        status = responses.status();
      }
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
  return status;
}

// Where a queued write goes, and the routing it is placed under. While the
// key's primary is down the write goes to the gutter; without a gutter pool
// it stays queued for the primary (its batch fails if the server is still
// down when it is sent). The epochs are read before routing: a transition in
// between makes the write's epoch old, and its batch is dropped rather than
// sent where it no longer belongs.
absl::StatusOr<ClientCore::Route> ClientCore::PlaceWrite(std::string_view key,
                                                         PreparedWrite* write) const {
  const Topology& t = Current();
  Route route{t.primaries[t.PrimaryFor(key)], false};
  const uint64_t primary_epoch = t.by_id[route.server]->health->transitions();
  const uint64_t pool_epoch = monitor_->epoch();
  if (!t.gutters.empty()) {
    absl::StatusOr<Route> routed = RouteIn(t, key, /*write=*/true);
    if (!routed.ok()) return routed.status();
    route = *routed;
  }
  write->server = route.server;
  write->epoch = route.gutter ? pool_epoch : primary_epoch;
  write->version = t.version;
  return route;
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
  absl::StatusOr<Route> route = PlaceWrite(key, &write);
  if (!route.ok()) return route.status();
  if (kind != PreparedWrite::Kind::kDelete) {
    absl::StatusOr<int64_t> ttl = TtlToken(options.ttl, route->gutter);
    if (!ttl.ok()) return ttl.status();
    write.ttl_token = *ttl;
  }
  // "ms <key> <len> F<flags> T<ttl> MS O<token> q\r\n<value>\r\n" is about 50
  // bytes besides the key and value.
  write.encoded_size = write.key.text.size() + write.value.size() + 64;
  return write;
}

void WriteBatch::Add(const PreparedWrite& write) {
  size_t value_offset = 0;
  switch (write.kind) {
    case PreparedWrite::Kind::kSet: {
      SetRequest set;
      set.value = write.value;
      set.client_flags = write.flags;
      set.ttl = write.ttl_token;
      requests_.Set(write.key, set, /*quiet=*/true);
      value_offset = requests_.bytes().size() - 2 - write.value.size();  // "<value>\r\n"
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
  entries_.push_back(
      Entry{write.kind, write.flags, write.ttl_token, value_offset, write.value.size()});
}

WriteBatch ClientCore::NewWriteBatch(size_t server, uint64_t epoch, uint64_t version,
                                     size_t capacity, size_t expected_bytes) {
  WriteBatch batch(server, epoch, version, Current().by_id[server]->connections.front().get(),
                   capacity);
  batch.entries_.reserve(capacity);
  if (expected_bytes > 0) batch.requests_.Reserve(capacity, expected_bytes);
  return batch;
}

absl::StatusOr<PreparedWrite> ClientCore::Replace(const WriteBatch& batch, size_t i,
                                                  std::string_view user_key) const {
  const WriteBatch::Entry& entry = batch.entries_[i];
  PreparedWrite write;
  write.kind = entry.kind;
  absl::StatusOr<WireKey> wire = Key(user_key);
  if (!wire.ok()) return wire.status();
  write.key = *std::move(wire);
  write.value =
      std::string_view(batch.requests_.bytes()).substr(entry.value_offset, entry.value_size);
  write.flags = entry.flags;
  write.ttl_token = entry.ttl_token;
  absl::StatusOr<Route> route = PlaceWrite(user_key, &write);
  if (!route.ok()) return route.status();
  if (route->gutter && write.kind != PreparedWrite::Kind::kDelete) {
    // The token as memcached reads it: 0 never expires, up to 30 days is
    // relative, beyond is a Unix time. In the gutter it lives at most
    // gutter_ttl: decoded, capped, and encoded again (an absolute time
    // already past stays as it is: the item is expired either way).
    const absl::Time now = absl::Now();
    absl::Duration left = absl::InfiniteDuration();
    if (entry.ttl_token > kMaxRelativeTtlSeconds) {
      left = absl::FromUnixSeconds(entry.ttl_token) - now;
    } else if (entry.ttl_token > 0) {
      left = absl::Seconds(entry.ttl_token);
    }
    if (left > absl::ZeroDuration()) {
      absl::StatusOr<int64_t> token = EncodeTtl(std::min(left, options_.gutter_ttl), now);
      if (!token.ok()) return token.status();
      write.ttl_token = *token;
    }
  }
  write.encoded_size = write.key.text.size() + write.value.size() + 64;
  return write;
}

absl::Status ClientCore::CheckEpoch(const WriteBatch& batch) const {
  const Topology& t = Current();
  // Without a gutter pool a transition changes no write's destination.
  if (t.gutters.empty() || batch.epoch_ == RoutingEpoch(batch.server_)) return absl::OkStatus();
  return absl::UnavailableError(absl::StrFormat(
      "memcached %s: a server of the pool went down or came back after these writes were "
      "queued; they are dropped rather than sent where their keys may no longer be read",
      t.by_id[batch.server_]->name));
}

WriteTicket ClientCore::Send(WriteBatch batch) {
  WriteTicket ticket;
  ticket.connection_ = batch.connection_;
  ticket.size_ = batch.size();
  // A batch of an older pool (the Mirror places queued ones again first,
  // but one may be taken just before a SetServers) goes where it was placed,
  // like a call in flight during the change.
  if (absl::Status s = CheckEpoch(batch); !s.ok()) {
    ticket.send_status_ = std::move(s);
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
