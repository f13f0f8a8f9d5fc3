#include "client/health.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace tiercache::mirror_internal {

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

HealthMonitor::HealthMonitor(std::vector<std::string> names, std::vector<bool> gutter,
                             const MemcachedOptions& options, Hooks hooks)
    : hooks_(std::move(hooks)),
      timeouts_before_down_(std::max<uint32_t>(1, options.timeouts_before_down)),
      // A zero backoff would probe in a tight loop.
      first_backoff_(std::max(options.reconnect_backoff, absl::Milliseconds(1))),
      max_backoff_(options.max_reconnect_backoff),
      on_server_state_(options.on_server_state),
      servers_(names.size()),
      jitter_(static_cast<uint32_t>(absl::ToUnixNanos(absl::Now()))) {
  for (size_t i = 0; i < names.size(); ++i) {
    servers_[i].name = std::move(names[i]);
    servers_[i].gutter = gutter[i];
    servers_[i].health.reset(new ServerHealth(this, i));
  }
}

HealthMonitor::~HealthMonitor() {
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
    Server& server = servers_[index];
    if (stop_ || server.health->down()) return;
    server.health->down_.store(true, std::memory_order_release);
    server.health->transitions_.fetch_add(1, std::memory_order_acq_rel);
    epoch_.fetch_add(1, std::memory_order_acq_rel);
    server.health->consecutive_timeouts_.store(0, std::memory_order_relaxed);
    server.down_since = absl::Now();
    server.why = why;
    server.backoff = first_backoff_;
    server.next_probe = server.down_since + JitteredLocked(server.backoff);
    ++server.times_down;
    events_.push_back(Event{index, false, why});
    if (!started_) {
      started_ = true;
      thread_ = std::thread([this] { Run(); });
    }
  }
  wake_.notify_all();
}

absl::Status HealthMonitor::DownStatus(size_t index) const {
  common_internal::MutexLock lock(&mu_);
  const Server& server = servers_[index];
  const absl::Time now = absl::Now();
  return absl::UnavailableError(absl::StrFormat(
      "memcached %s is down since %s ago (%s); next probe in %s", server.name,
      absl::FormatDuration(absl::Trunc(now - server.down_since, absl::Milliseconds(1))),
      server.why.message(),
      absl::FormatDuration(absl::Trunc(std::max(server.next_probe - now, absl::ZeroDuration()),
                                       absl::Milliseconds(1)))));
}

std::vector<ServerStatus> HealthMonitor::Snapshot() const {
  common_internal::MutexLock lock(&mu_);
  std::vector<ServerStatus> out;
  out.reserve(servers_.size());
  for (const Server& server : servers_) {
    ServerStatus status;
    status.server = server.name;
    status.gutter = server.gutter;
    status.up = !server.health->down();
    status.down_since = status.up ? absl::InfinitePast() : server.down_since;
    status.last_error = server.why;
    status.times_down = server.times_down;
    status.times_up = server.times_up;
    status.rerouted = server.health->rerouted_.load(std::memory_order_relaxed);
    out.push_back(std::move(status));
  }
  return out;
}

void HealthMonitor::Run() {
  while (true) {
    {
      common_internal::MutexLock lock(&mu_);
      absl::Time next = absl::InfiniteFuture();
      for (const Server& server : servers_) {
        if (server.health->down()) next = std::min(next, server.next_probe);
      }
      while (!stop_ && events_.empty() && absl::Now() < next) {
        if (next == absl::InfiniteFuture()) {
          wake_.wait(lock);
        } else {
          wake_.wait_until(lock, absl::ToChronoTime(next));
        }
        next = absl::InfiniteFuture();
        for (const Server& server : servers_) {
          if (server.health->down()) next = std::min(next, server.next_probe);
        }
      }
      if (stop_) return;
    }
    DeliverEvents();
    ProbeDue();
  }
}

void HealthMonitor::DeliverEvents() {
  std::deque<Event> events;
  {
    common_internal::MutexLock lock(&mu_);
    events.swap(events_);
  }
  // Outside the lock: the hooks take the connections' locks, and a user's
  // callback may call the client.
  for (const Event& event : events) {
    if (!event.up && hooks_.on_down) hooks_.on_down(event.index, event.why);
    if (on_server_state_) on_server_state_(servers_[event.index].name, event.up, event.why);
  }
}

void HealthMonitor::ProbeDue() {
  for (size_t i = 0; i < servers_.size(); ++i) {
    // A server marked down during an earlier probe has its down reported
    // (and its connections closed) before it can be probed and marked up.
    DeliverEvents();
    absl::Time down_since;
    {
      common_internal::MutexLock lock(&mu_);
      if (stop_) return;
      const Server& server = servers_[i];
      if (!server.health->down() || absl::Now() < server.next_probe) continue;
      down_since = server.down_since;
    }
    const absl::Status probed = hooks_.probe ? hooks_.probe(i, down_since) : absl::OkStatus();
    if (probed.ok() && hooks_.on_up) hooks_.on_up(i);
    {
      common_internal::MutexLock lock(&mu_);
      Server& server = servers_[i];
      // Up (or still down) first, then writes of its keys are accepted
      // again: none goes to the gutter between its rejoin step and now.
      const auto end_rejoin = [&server] { server.health->set_rejoining(false); };
      if (probed.ok()) {
        server.health->consecutive_timeouts_.store(0, std::memory_order_relaxed);
        server.health->down_.store(false, std::memory_order_release);
        server.health->transitions_.fetch_add(1, std::memory_order_acq_rel);
        epoch_.fetch_add(1, std::memory_order_acq_rel);
        server.next_probe = absl::InfiniteFuture();
        ++server.times_up;
        end_rejoin();
        events_.push_back(Event{i, true, absl::OkStatus()});
      } else {
        server.why = probed;
        server.backoff = std::min(server.backoff * 2, max_backoff_);
        server.next_probe = absl::Now() + JitteredLocked(server.backoff);
        end_rejoin();
      }
    }
  }
}

}  // namespace tiercache::mirror_internal
