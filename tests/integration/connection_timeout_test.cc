// One unanswered request is one timeout against its server's health, against
// a real memcached that hangs (SIGSTOP): never two (its caller, who gave up at
// its deadline, and the next caller, who finds it overdue), and never none (a
// request queued behind one whose caller already counted it). Both happened:
// the first marked a hung server down after one request with
// timeouts_before_down = 2; the second would have kept it up after two.

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/connection.h"
#include "client/health.h"
#include "gtest/gtest.h"
#include "memcached_server.h"
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
  const absl::Time deadline = absl::Now() + kOpTimeout * 0.9;
  absl::StatusOr<Connection::Ticket> first = Send(deadline);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(connection_->Wait(*first, deadline).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(Down());
  // Not yet overdue (0.9 of op_timeout old): the second request queues
  // behind it, and its wait ends when the first is a whole op_timeout old.
  const absl::Time second_deadline = absl::Now() + kOpTimeout;
  absl::StatusOr<Connection::Ticket> second = Send(second_deadline);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(connection_->Wait(*second, second_deadline).ok());
  EXPECT_TRUE(Down()) << "two unanswered requests, timeouts_before_down = 2";
}

}  // namespace
}  // namespace tiercache::mirror_internal
