// Failure detection and the gutter pool, against real memcached servers: two
// primaries and one gutter. A primary is killed (SIGKILL: connections are
// refused) or hung (SIGSTOP: connections are accepted, nothing is answered);
// its keys go to the gutter with capped TTLs, the other primary's keys are
// untouched, every transition is reported, and when it returns it is flushed
// once (by the first client that saw it down) before its keys go back to it.

#include <signal.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/client_core.h"
#include "gtest/gtest.h"
#include "memcached_server.h"
#include "tiercache/memcached.h"

namespace tiercache {
namespace {

// What a Get answered, as text: the value, "<miss>" or "<error: ...>".
std::string Read(const absl::StatusOr<std::optional<Item>>& got) {
  if (!got.ok()) return "<error: " + std::string(got.status().message()) + ">";
  return got->has_value() ? (*got)->value : "<miss>";
}

struct Transition {
  std::string server;
  bool up;
  std::string why;
};

class GutterTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(a_.running() && b_.running() && g_.running()); }

  MemcachedOptions Options(bool gutter = true) {
    MemcachedOptions options;
    options.servers = {a_.address(), b_.address()};
    if (gutter) options.gutter_servers = {g_.address()};
    options.gutter_ttl = absl::Seconds(5);
    options.op_timeout = absl::Milliseconds(150);
    options.connect_timeout = absl::Milliseconds(300);
    options.reconnect_backoff = absl::Milliseconds(10);
    options.max_reconnect_backoff = absl::Milliseconds(100);
    options.timeouts_before_down = 2;
    options.on_server_state = [this](std::string_view server, bool up, const absl::Status& why) {
      std::lock_guard<std::mutex> lock(mu_);
      transitions_.push_back(Transition{std::string(server), up, std::string(why.message())});
    };
    return options;
  }
  std::unique_ptr<MemcachedClient> Client(bool gutter = true) {
    absl::StatusOr<std::unique_ptr<MemcachedClient>> client =
        MemcachedClient::Create(Options(gutter));
    EXPECT_TRUE(client.ok()) << client.status();
    return *std::move(client);
  }
  static std::unique_ptr<MemcachedClient> Direct(const testing::MemcachedServer& server) {
    MemcachedOptions options;
    options.servers = {server.address()};
    return *MemcachedClient::Create(options);
  }
  // A key the pool places on primary `index`.
  static std::string KeyOn(MemcachedClient& client, size_t index, std::string_view stem) {
    for (int n = 0;; ++n) {
      std::string key = absl::StrCat(std::string(stem), n);
      if (mirror_internal::CoreOf(client).ServerIndexFor(key) == index) return key;
    }
  }
  // Waits (bounded) until `client` sees server `index` up or down.
  static bool WaitFor(MemcachedClient& client, size_t index, bool up) {
    const absl::Time until = absl::Now() + absl::Seconds(5);
    while (absl::Now() < until) {
      if (client.ServerStates()[index].up == up) return true;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return false;
  }
  std::vector<Transition> Transitions() {
    std::lock_guard<std::mutex> lock(mu_);
    return transitions_;
  }
  // Waits (bounded) for a reported transition of `server` to `up`.
  bool WaitForReport(const std::string& server, bool up) {
    const absl::Time until = absl::Now() + absl::Seconds(5);
    while (absl::Now() < until) {
      for (const Transition& t : Transitions()) {
        if (t.server == server && t.up == up) return true;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return false;
  }

  testing::MemcachedServer a_, b_, g_;
  // std::mutex, not absl::Mutex: Debian's abseil is not built for TSan,
  // which would not see its synchronization.
  std::mutex mu_;
  std::vector<Transition> transitions_;  // guarded by mu_
};

TEST_F(GutterTest, AKilledPrimarysKeysGoToTheGutterWithCappedTtlsAndComeBack) {
  std::unique_ptr<MemcachedClient> client = Client();
  const std::string on_a = KeyOn(*client, 0, "a:");
  const std::string on_b = KeyOn(*client, 1, "b:");
  ASSERT_EQ(*client->Set(on_a, "before"), StoreResult::kStored);
  ASSERT_EQ((*Direct(a_)->Get(on_a))->value, "before");

  a_.Stop();  // SIGKILL: connections refused
  // The call that finds it refused marks it down and is answered by the
  // gutter: no error reaches the caller.
  ASSERT_EQ(*client->Set(on_a, "during", {.ttl = absl::Hours(1), .flags = 0}),
            StoreResult::kStored);
  EXPECT_FALSE(client->ServerStates()[0].up);
  absl::StatusOr<std::optional<Item>> in_gutter = Direct(g_)->Get(on_a);
  ASSERT_TRUE(in_gutter.ok() && in_gutter->has_value());
  EXPECT_EQ((*in_gutter)->value, "during");
  // An hour asked for; the gutter keeps it at most gutter_ttl (5 s).
  EXPECT_LE((*in_gutter)->expiry, absl::Now() + absl::Seconds(6));
  EXPECT_EQ(Read(client->Get(on_a)), "during");
  // The other primary's keys do not move.
  ASSERT_EQ(*client->Set(on_b, "b-value"), StoreResult::kStored);
  EXPECT_EQ(Read(Direct(b_)->Get(on_b)), "b-value");
  EXPECT_FALSE(Direct(g_)->Get(on_b)->has_value());
  // Deletes and counters of its keys go there too.
  ASSERT_TRUE(*client->Delete(on_a));
  EXPECT_FALSE(client->Get(on_a)->has_value());
  EXPECT_FALSE(Direct(g_)->Get(on_a)->has_value());

  ASSERT_TRUE(WaitForReport(a_.address(), /*up=*/false));
  const std::vector<ServerStatus> states = client->ServerStates();
  ASSERT_EQ(states.size(), 3u);
  EXPECT_EQ(states[0].server, a_.address());
  EXPECT_EQ(states[0].times_down, 1u);
  EXPECT_GE(states[0].rerouted, 4u);
  EXPECT_FALSE(states[0].last_error.ok());
  EXPECT_TRUE(states[1].up);
  EXPECT_EQ(states[1].rerouted, 0u);
  EXPECT_TRUE(states[2].gutter);
  EXPECT_TRUE(states[2].up);

  a_.Start();  // empty, on the same port
  ASSERT_TRUE(WaitFor(*client, 0, /*up=*/true));
  ASSERT_TRUE(WaitForReport(a_.address(), /*up=*/true));
  EXPECT_EQ(client->ServerStates()[0].times_up, 1u);
  ASSERT_EQ(*client->Set(on_a, "after"), StoreResult::kStored);
  EXPECT_EQ(Read(Direct(a_)->Get(on_a)), "after");
}

// A GetMany that finds a primary refusing connections is answered as a
// single call is: the dead primary's keys are asked of the gutter (once,
// within the deadline), the live one's keys are served, and nothing fails.
TEST_F(GutterTest, AGetManyThatFindsAPrimaryKilledIsAnsweredWithTheGutter) {
  std::unique_ptr<MemcachedClient> writer = Client();
  std::vector<std::string> keys;
  for (int i = 0; i < 40; ++i) {
    keys.push_back(KeyOn(*writer, i % 2, absl::StrCat(i % 2 == 0 ? "a" : "b", i, ":")));
    ASSERT_EQ(*writer->Set(keys.back(), "primary"), StoreResult::kStored);
  }
  // The gutter holds some of a's keys (as another replica would have left
  // them): proof that the dead primary's keys were asked of it.
  std::unique_ptr<MemcachedClient> gutter = Direct(g_);
  for (int i = 0; i < 40; i += 4) {
    ASSERT_EQ(*gutter->Set(keys[i], "gutter"), StoreResult::kStored);
  }
  a_.Stop();  // SIGKILL: connections refused
  // A client with no connection yet: its first connect to a is refused. (One
  // whose socket to a is open may see the kill as an EOF, which says nothing
  // of the server's health, and fail the call as it should.)
  std::unique_ptr<MemcachedClient> client = Client();
  const std::vector<std::string_view> views(keys.begin(), keys.end());
  absl::StatusOr<absl::flat_hash_map<std::string, Item>> found = client->GetMany(views);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_FALSE(client->ServerStates()[0].up);
  for (int i = 0; i < 40; ++i) {
    const auto it = found->find(keys[i]);
    if (i % 2 == 1) {  // on b: served
      ASSERT_NE(it, found->end()) << keys[i];
      EXPECT_EQ(it->second.value, "primary");
    } else if (i % 4 == 0) {  // on a, and in the gutter
      ASSERT_NE(it, found->end()) << keys[i];
      EXPECT_EQ(it->second.value, "gutter");
    } else {  // on a only: lost with it, a miss
      EXPECT_EQ(it, found->end()) << keys[i];
    }
  }
}

TEST_F(GutterTest, AHungPrimaryIsDownAfterTimeoutsAndServesNothingStaleWhenItReturns) {
  std::unique_ptr<MemcachedClient> first = Client();
  std::unique_ptr<MemcachedClient> second = Client();  // another replica
  const std::string rewritten = KeyOn(*first, 0, "rw:");
  const std::string deleted = KeyOn(*first, 0, "del:");
  const std::string untouched = KeyOn(*first, 0, "keep:");
  for (const std::string& key : {rewritten, deleted, untouched}) {
    ASSERT_EQ(*first->Set(key, "old"), StoreResult::kStored);
  }

  a_.Pause();  // accepts connections, answers nothing
  // timeouts_before_down = 2: two timed-out calls, then the gutter answers.
  for (MemcachedClient* client : {first.get(), second.get()}) {
    for (int i = 0; i < 2; ++i) {
      absl::StatusOr<std::optional<Item>> timed_out = client->Get(rewritten);
      EXPECT_FALSE(timed_out.ok()) << "call " << i << " of client "
                                   << (client == first.get() ? 1 : 2) << ": " << Read(timed_out);
    }
    ASSERT_TRUE(WaitFor(*client, 0, /*up=*/false));
  }
  ASSERT_TRUE(WaitForReport(a_.address(), /*up=*/false));
  bool named_timeouts = false;
  for (const Transition& t : Transitions()) {
    named_timeouts = named_timeouts || absl::StrContains(t.why, "requests in a row timed out");
  }
  EXPECT_TRUE(named_timeouts);
  ASSERT_EQ(*first->Set(rewritten, "new"), StoreResult::kStored);  // in the gutter
  ASSERT_FALSE(*first->Delete(deleted));  // nothing in the gutter to delete; still "old" on a
  EXPECT_EQ(Read(second->Get(rewritten)), "new");

  a_.Resume();
  ASSERT_TRUE(WaitFor(*first, 0, /*up=*/true));
  // a held "old" for all three; the first client back flushed it before
  // sending it any key, so none of them is ever read old again.
  EXPECT_FALSE(first->Get(rewritten)->has_value());
  EXPECT_FALSE(first->Get(deleted)->has_value());
  EXPECT_FALSE(first->Get(untouched)->has_value());
  ASSERT_EQ(*first->Set(rewritten, "fresh"), StoreResult::kStored);
  // The second client's outage began before that flush: it does not flush
  // again, and reads what was written since.
  ASSERT_TRUE(WaitFor(*second, 0, /*up=*/true));
  EXPECT_EQ(Read(second->Get(rewritten)), "fresh");
  EXPECT_EQ(Read(Direct(a_)->Get(rewritten)), "fresh");
}

TEST_F(GutterTest, WithoutAGutterADownServerFailsFastNamingWhy) {
  std::unique_ptr<MemcachedClient> client = Client(/*gutter=*/false);
  const std::string on_a = KeyOn(*client, 0, "a:");
  const std::string on_b = KeyOn(*client, 1, "b:");
  a_.Stop();
  EXPECT_EQ(client->Get(on_a).status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(WaitFor(*client, 0, /*up=*/false));
  const absl::Status down = client->Get(on_a).status();
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(down.message(), "memcached " + a_.address() + " is down since"))
      << down;
  EXPECT_TRUE(absl::StrContains(down.message(), "next probe in")) << down;
  EXPECT_EQ(*client->Set(on_b, "fine"), StoreResult::kStored);
  ASSERT_TRUE(WaitForReport(a_.address(), /*up=*/false));
  a_.Start();
  ASSERT_TRUE(WaitFor(*client, 0, /*up=*/true));
  EXPECT_EQ(*client->Set(on_a, "back"), StoreResult::kStored);
}

TEST_F(GutterTest, APrimaryThatRefusesFlushAllStaysDownNamingWhy) {
  testing::MemcachedServer no_flush({false, {"-F"}});  // memcached -F: flush_all disabled
  ASSERT_TRUE(no_flush.running());
  MemcachedOptions options = Options();
  options.servers = {no_flush.address()};
  absl::StatusOr<std::unique_ptr<MemcachedClient>> client = MemcachedClient::Create(options);
  ASSERT_TRUE(client.ok());
  no_flush.Pause();
  for (int i = 0; i < 2; ++i) EXPECT_FALSE((*client)->Get("k").ok());
  ASSERT_TRUE(WaitFor(**client, 0, /*up=*/false));
  no_flush.Resume();
  // Probed, answered, but its old values cannot be cleared: it stays down,
  // and says so; its keys are served by the gutter.
  const absl::Time until = absl::Now() + absl::Seconds(3);
  std::string why;
  while (absl::Now() < until && !absl::StrContains(why, "refuses flush_all")) {
    why = std::string((*client)->ServerStates()[0].last_error.message());
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(absl::StrContains(why, "refuses flush_all (started with -F)")) << why;
  EXPECT_FALSE((*client)->ServerStates()[0].up);
  EXPECT_EQ(*(*client)->Set("k", "v"), StoreResult::kStored);
  EXPECT_EQ((**Direct(g_)->Get("k")).value, "v");
}

TEST_F(GutterTest, BadGutterOptionsAreRejected) {
  MemcachedOptions options = Options();
  options.gutter_ttl = absl::ZeroDuration();
  EXPECT_EQ(MemcachedClient::Create(options).status().message(), "gutter_ttl must be positive");
  options = Options();
  options.gutter_servers = {b_.address()};
  EXPECT_EQ(MemcachedClient::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.gutter_servers = {"no-port-here"};
  EXPECT_EQ(MemcachedClient::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tiercache
