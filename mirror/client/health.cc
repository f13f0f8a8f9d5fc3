#include "client/health.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace tiercache::mirror_internal {
namespace {

// A copy of `status` that shares nothing with it. absl::Status copies share
// a reference-counted message; Debian's abseil is not built for
// ThreadSanitizer, which would not see that count's atomics and report the
// message's release on one thread against its read on another. The statuses
// here cross threads (the monitor's, the callers'): they are given fresh.
absl::Status Unshared(const absl::Status& status) {
  return absl::Status(status.code(), std::string(status.message()));
}

}  // namespace

void ServerHealth::ReportConnectFailure(const absl::Status& why) {
  monitor_->MarkDown(index_, why);
}

void ServerHealth::ReportTimeout(const absl::Status& why) {
  const uint32_t in_a_row = consecutive_timeouts_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (in_a_row >= monitor_->timeouts_before_down_) {
    monitor_->MarkDown(
        index_, absl::UnavailableError(absl::StrFormat(
                    "%d requests in a row timed out; the last: %s", in_a_row, why.message())));
  }
}

HealthMonitor::HealthMonitor(const MemcachedOptions& options, Hooks hooks)
    : hooks_(std::move(hooks)),
      timeouts_before_down_(std::max<uint32_t>(1, options.timeouts_before_down)),
      // A zero backoff would probe in a tight loop.
      first_backoff_(std::max(options.reconnect_backoff, absl::Milliseconds(1))),
      max_backoff_(options.max_reconnect_backoff),
      on_server_state_(options.on_server_state),
      jitter_(static_cast<uint32_t>(absl::ToUnixNanos(absl::Now()))) {}

size_t HealthMonitor::Add(std::string name, bool gutter) {
  common_internal::MutexLock lock(&mu_);
  auto server = std::make_unique<Server>();
  server->name = std::move(name);
  server->gutter = gutter;
  server->health.reset(new ServerHealth(this, servers_.size()));
  servers_.push_back(std::move(server));
  return servers_.size() - 1;
}

void HealthMonitor::Retire(size_t index) {
  common_internal::MutexLock lock(&mu_);
  servers_[index]->retired = true;
}

ServerHealth& HealthMonitor::health(size_t index) const {
  common_internal::MutexLock lock(&mu_);
  return *servers_[index]->health;
}

HealthMonitor::~HealthMonitor() { Stop(); }

void HealthMonitor::Stop() {
  {
    common_internal::MutexLock lock(&mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Duration HealthMonitor::JitteredLocked(absl::Duration d) {
  // +-50%: replicas that saw the same outage do not probe in step.
  std::uniform_real_distribution<double> factor(0.5, 1.5);
  return d * factor(jitter_);
}

void HealthMonitor::MarkDown(size_t index, const absl::Status& why) {
  {
    common_internal::MutexLock lock(&mu_);
    Server& server = *servers_[index];
    if (stop_ || server.retired || server.health->down()) return;
    server.health->down_.store(true, std::memory_order_release);
    server.health->transitions_.fetch_add(1, std::memory_order_acq_rel);
    epoch_.fetch_add(1, std::memory_order_acq_rel);
    server.health->consecutive_timeouts_.store(0, std::memory_order_relaxed);
    server.down_since = absl::Now();
    server.why = Unshared(why);
    server.backoff = first_backoff_;
    server.next_probe = server.down_since + JitteredLocked(server.backoff);
    ++server.times_down;
    events_.push_back(Event{index, false, Unshared(why)});
    if (!started_) {
      started_ = true;
      thread_ = std::thread([this] { Run(); });
    }
  }
  wake_.notify_all();
}

absl::Status HealthMonitor::DownStatus(size_t index) const {
  common_internal::MutexLock lock(&mu_);
  const Server& server = *servers_[index];
  const absl::Time now = absl::Now();
  return absl::UnavailableError(absl::StrFormat(
      "memcached %s is down since %s ago (%s); next probe in %s", server.name,
      absl::FormatDuration(absl::Trunc(now - server.down_since, absl::Milliseconds(1))),
      server.why.message(),
      absl::FormatDuration(absl::Trunc(std::max(server.next_probe - now, absl::ZeroDuration()),
                                       absl::Milliseconds(1)))));
}

ServerStatus HealthMonitor::Status(size_t index) const {
  common_internal::MutexLock lock(&mu_);
  const Server& server = *servers_[index];
  ServerStatus status;
  status.server = server.name;
  status.gutter = server.gutter;
  status.up = !server.health->down();
  status.down_since = status.up ? absl::InfinitePast() : server.down_since;
  status.last_error = Unshared(server.why);
  status.times_down = server.times_down;
  status.times_up = server.times_up;
  status.rerouted = server.health->rerouted_.load(std::memory_order_relaxed);
  return status;
}

void HealthMonitor::Run() {
  while (true) {
    {
      common_internal::MutexLock lock(&mu_);
      const auto next_probe = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        absl::Time next = absl::InfiniteFuture();
        for (const auto& server : servers_) {
          if (server->health->down() && !server->retired) {
            next = std::min(next, server->next_probe);
          }
        }
        return next;
      };
      absl::Time next = next_probe();
      while (!stop_ && events_.empty() && absl::Now() < next) {
        if (next == absl::InfiniteFuture()) {
          wake_.wait(lock);
        } else {
          wake_.wait_until(lock, absl::ToChronoTime(next));
        }
        next = next_probe();
      }
      if (stop_) return;
    }
    DeliverEvents();
    ProbeDue();
  }
}

void HealthMonitor::DeliverEvents() {
  std::deque<Event> events;
  std::vector<std::string> names;
  {
    common_internal::MutexLock lock(&mu_);
    events.swap(events_);
    for (const Event& event : events) names.push_back(servers_[event.index]->name);
  }
  // Outside the lock: the hooks take the connections' locks, and a user's
  // callback may call the client.
  for (size_t i = 0; i < events.size(); ++i) {
    const Event& event = events[i];
    if (!event.up && hooks_.on_down) hooks_.on_down(event.index, event.why);
    if (on_server_state_) on_server_state_(names[i], event.up, event.why);
  }
}

void HealthMonitor::ProbeDue() {
  for (size_t i = 0;; ++i) {
    // A server marked down during an earlier probe has its down reported
    // (and its connections closed) before it can be probed and marked up.
    DeliverEvents();
    absl::Time down_since;
    {
      common_internal::MutexLock lock(&mu_);
      if (stop_ || i >= servers_.size()) return;
      const Server& server = *servers_[i];
      if (server.retired || !server.health->down() || absl::Now() < server.next_probe) continue;
      down_since = server.down_since;
    }
    const absl::Status probed = hooks_.probe ? hooks_.probe(i, down_since) : absl::OkStatus();
    if (probed.ok() && hooks_.on_up) hooks_.on_up(i);
    {
      common_internal::MutexLock lock(&mu_);
      Server& server = *servers_[i];
      // Up (or still down) first, then writes of its keys are accepted
      // again: none goes to the gutter between its rejoin step and now.
      const auto end_rejoin = [&server] { server.health->set_rejoining(false); };
      if (server.retired) {  // removed from the pool while it was probed
        end_rejoin();
      } else if (probed.ok()) {
        server.health->consecutive_timeouts_.store(0, std::memory_order_relaxed);
        server.health->down_.store(false, std::memory_order_release);
        server.health->transitions_.fetch_add(1, std::memory_order_acq_rel);
        epoch_.fetch_add(1, std::memory_order_acq_rel);
        server.next_probe = absl::InfiniteFuture();
        ++server.times_up;
        end_rejoin();
        events_.push_back(Event{i, true, absl::OkStatus()});
      } else {
        server.why = Unshared(probed);
        server.backoff = std::min(server.backoff * 2, max_backoff_);
        server.next_probe = absl::Now() + JitteredLocked(server.backoff);
        end_rejoin();
      }
    }
  }
}

}  // namespace tiercache::mirror_internal
