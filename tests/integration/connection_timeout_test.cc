// One unanswered request is one timeout against its server's health, against
// a real memcached that hangs (SIGSTOP): never two (its caller, who gave up at
// its deadline, and the next caller, who finds it overdue), and never none (a
// request queued behind one whose caller already counted it). Both happened:
// the first marked a hung server down after one request with
// timeouts_before_down = 2; the second would have kept it up after two.
// And a request its caller gave up on is not queued behind (against a proxy
// that drops one answer, which a hung memcached cannot do to one request).

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/connection.h"
#include "client/health.h"
#include "gtest/gtest.h"
#include "memcached_server.h"
#include "misbehaving_memcached.h"
#include "protocol/meta_protocol.h"
#include "tiercache/memcached.h"

namespace tiercache::mirror_internal {
namespace {

constexpr absl::Duration kOpTimeout = absl::Milliseconds(200);

class ConnectionTimeoutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.running());
    MemcachedOptions options;
    options.servers = {server_.address()};
    options.timeouts_before_down = 2;
    // Probes fail while the server is stopped; the monitor's thread only
    // runs after a server is marked down.
    monitor_ = std::make_unique<HealthMonitor>(
        options, HealthMonitor::Hooks{
                     .on_down = [](size_t, const absl::Status&) {},
                     .probe = [](size_t, absl::Time) { return absl::UnavailableError("hung"); },
                     .on_up = [](size_t) {},
                 });
    id_ = monitor_->Add(server_.address(), /*gutter=*/false);
    ConnectionOptions connection_options;
    connection_options.op_timeout = kOpTimeout;
    connection_ = std::make_unique<Connection>(*ParseEndpoint(server_.address()),
                                               connection_options, &monitor_->health(id_));
    // Connected, and answered, before the server hangs.
    ASSERT_TRUE(connection_->Wait(*Send(absl::Now() + kOpTimeout), absl::Now() + kOpTimeout).ok());
    server_.Pause();
  }
  void TearDown() override {
    server_.Resume();
    connection_.reset();
    monitor_->Stop();
  }

  // A get of one key, sent at once; its ticket.
  absl::StatusOr<Connection::Ticket> Send(absl::Time deadline) {
    RequestBatch batch(connection_->ReserveOpaque(1));
    batch.Get(*EncodeKey("", "k"), GetRequest{});
    return connection_->Send(std::move(batch), deadline);
  }
  bool Down() const { return monitor_->health(id_).down(); }

  testing::MemcachedServer server_;
  std::unique_ptr<HealthMonitor> monitor_;
  size_t id_ = 0;
  std::unique_ptr<Connection> connection_;
};

TEST_F(ConnectionTimeoutTest, ARequestFoundOverdueIsNotCountedAgain) {
  const absl::Time deadline = absl::Now() + kOpTimeout * 0.9;
  absl::StatusOr<Connection::Ticket> first = Send(deadline);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(connection_->Wait(*first, deadline).status().code(),
            absl::StatusCode::kDeadlineExceeded);  // counted by its caller
  absl::SleepFor(kOpTimeout * 0.3);                // now overdue: the next Send replaces the socket
  ASSERT_TRUE(Send(absl::Now() + kOpTimeout).ok());
  EXPECT_FALSE(Down()) << "one unanswered request was counted twice";
}

TEST_F(ConnectionTimeoutTest, ARequestQueuedBehindACountedOneIsCountedToo) {
  // Both sent before the first's caller gives up, so the second is queued
  // behind it; the second's caller then reads until the first is a whole
  // op_timeout old and gives up on the connection.
  const absl::Time deadline = absl::Now() + kOpTimeout * 0.9;
  absl::StatusOr<Connection::Ticket> first = Send(deadline);
  ASSERT_TRUE(first.ok()) << first.status();
  const absl::Time second_deadline = absl::Now() + kOpTimeout;
  absl::StatusOr<Connection::Ticket> second = Send(second_deadline);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(connection_->Wait(*first, deadline).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(Down());
  EXPECT_FALSE(connection_->Wait(*second, second_deadline).ok());
  EXPECT_TRUE(Down()) << "two unanswered requests, timeouts_before_down = 2";
}

// A caller's deadline is set a moment before its request is sent, so when it
// gives up the request is not yet op_timeout old. The next request must not
// queue behind it all the same: a server that dropped one answer (here, a
// proxy in front of memcached) answers the next, and that answer, arriving
// while the dropped one is still awaited, breaks the connection and fails the
// next call too. This happened to TieredCache::GetOrLoad under
// AddressSanitizer: the load's write-back, sent by the Mirror in that moment,
// and the next key's read failed, and the next key was loaded again.
TEST(ConnectionGiveUpTest, TheNextRequestDoesNotQueueBehindOneItsCallerGaveUpOn) {
  testing::MemcachedServer server;
  ASSERT_TRUE(server.running());
  testing::MisbehavingMemcached proxy(server.address());
  ConnectionOptions options;
  options.op_timeout = kOpTimeout;
  options.reconnect_backoff = absl::ZeroDuration();
  options.max_reconnect_backoff = absl::ZeroDuration();
  Connection connection(*ParseEndpoint(proxy.address()), options);
  auto call = [&](absl::Time deadline) {
    RequestBatch batch(connection.ReserveOpaque(1));
    batch.Get(*EncodeKey("", "k"), GetRequest{});
    return connection.Call(std::move(batch), deadline);
  };
  ASSERT_TRUE(call(absl::Now() + kOpTimeout).ok());  // connected
  testing::MisbehavingMemcached::Arming silent;
  silent.fault = testing::MisbehavingMemcached::Fault::kSilent;
  silent.command = "mg";
  // Given up on after 0.7 of op_timeout: long enough to count as a timeout,
  // as a caller whose deadline was set a moment before sending would.
  proxy.Arm(silent);
  EXPECT_EQ(call(absl::Now() + kOpTimeout * 0.7).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  const absl::StatusOr<std::vector<Response>> next = call(absl::Now() + kOpTimeout);
  EXPECT_TRUE(next.ok()) << next.status();
}

}  // namespace
}  // namespace tiercache::mirror_internal
