// MisbehavingMemcached against a real memcached (Debian's 1.6.18), spoken to
// in raw meta protocol over a plain socket: each fault, exactly as documented.

#include "misbehaving_memcached.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "memcached_server.h"

namespace tiercache::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using Fault = MisbehavingMemcached::Fault;

constexpr milliseconds kTimeout{1000};  // a bound for what must arrive, not a delay

// A plain client socket. Every read is bounded: a missing answer fails the
// test instead of hanging it.
class RawConnection {
 public:
  // "127.0.0.1:<port>" or a unix socket path.
  explicit RawConnection(const std::string& address) {
    const size_t colon = address.rfind(':');
    if (address.find('/') == std::string::npos && colon != std::string::npos) {
      fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
      connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    } else {
      fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      address.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
      connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    }
    EXPECT_TRUE(connected_) << "cannot connect to " << address;
  }
  ~RawConnection() { ::close(fd_); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  void Send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      ASSERT_GT(n, 0) << "send failed";
      bytes.remove_prefix(static_cast<size_t>(n));
    }
  }

  // Up to `size` bytes; fewer if the peer closes or `timeout` passes first.
  std::string Read(size_t size, milliseconds timeout = kTimeout) {
    std::string out;
    const Clock::time_point deadline = Clock::now() + timeout;
    char chunk[4096];
    while (out.size() < size) {
      const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now());
      pollfd readable = {fd_, POLLIN, 0};
      const int ready = ::poll(&readable, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) break;
      const ssize_t n = ::recv(fd_, chunk, std::min(sizeof(chunk), size - out.size()), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {  // EOF, or reset
        closed_ = true;
        break;
      }
      out.append(chunk, static_cast<size_t>(n));
      ++chunks_;
    }
    return out;
  }
  // As many bytes as `expected` has, to compare with it.
  std::string ReadLike(std::string_view expected, milliseconds timeout = kTimeout) {
    return Read(expected.size(), timeout);
  }
  // True if the peer closes within `timeout` without sending anything more.
  bool ReadsEof(milliseconds timeout = kTimeout) { return Read(1, timeout).empty() && closed_; }

  int chunks() const { return chunks_; }  // recv calls that returned bytes

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  int chunks_ = 0;
};

// The connection carries nothing unexpected: the answer to a fresh mn is the
// very next thing on it.
void ExpectInSync(RawConnection& client) {
  client.Send("mn\r\n");
  EXPECT_EQ(client.ReadLike("MN\r\n"), "MN\r\n");
}

MisbehavingMemcached::Arming Arm(Fault fault, std::string command, int count = 1) {
  MisbehavingMemcached::Arming arming;
  arming.fault = fault;
  arming.command = std::move(command);
  arming.count = count;
  return arming;
}

const std::string kAnswerA = "VA 1 O1\r\nx\r\n";  // "mg a v O1\r\n"
const std::string kAnswerB = "VA 1 O2\r\ny\r\n";  // "mg b v O2\r\n"

class MisbehavingMemcachedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.running());
    RawConnection direct(server_.address());  // not through the proxy
    direct.Send("ms a 1\r\nx\r\nms b 1\r\ny\r\nmn\r\n");
    ASSERT_EQ(direct.ReadLike("HD\r\nHD\r\nMN\r\n"), "HD\r\nHD\r\nMN\r\n");
  }

  MemcachedServer server_;
  MisbehavingMemcached proxy_{server_.address()};
};

TEST_F(MisbehavingMemcachedTest, UnarmedPassesAnswersThroughUnchanged) {
  RawConnection client(proxy_.address());
  // memcached 1.6.18 returns flags in the order they were requested.
  client.Send("ms c 1 O1 k\r\nz\r\n");
  EXPECT_EQ(client.ReadLike("HD O1 kc\r\n"), "HD O1 kc\r\n");
  client.Send("mg c v k O2\r\n");
  EXPECT_EQ(client.ReadLike("VA 1 kc O2\r\nz\r\n"), "VA 1 kc O2\r\nz\r\n");
  client.Send("mg c O3 v k\r\n");
  EXPECT_EQ(client.ReadLike("VA 1 O3 kc\r\nz\r\n"), "VA 1 O3 kc\r\nz\r\n");
  // Pipelined quiet requests: a quiet miss answers nothing, a quiet md miss
  // still answers NF in 1.6.18, and mn takes no opaque.
  client.Send("mg missing v q O4\r\nmg c v q O5\r\nmd missing q O6\r\nmn O7\r\n");
  const std::string pipelined = "VA 1 O5\r\nz\r\nNF O6\r\nMN\r\n";
  EXPECT_EQ(client.ReadLike(pipelined), pipelined);
  EXPECT_EQ(proxy_.faults_applied(), 0);
  EXPECT_EQ(proxy_.connections_accepted(), 1);
}

TEST_F(MisbehavingMemcachedTest, ValuesAreFramedByLengthNotByContent) {
  RawConnection client(proxy_.address());
  client.Send("ms bin 8\r\n\r\nMN\r\nxx\r\nmg bin v\r\nget bin\r\n");
  const std::string expected =
      "HD\r\nVA 8\r\n\r\nMN\r\nxx\r\nVALUE bin 0 8\r\n\r\nMN\r\nxx\r\nEND\r\n";
  EXPECT_EQ(client.ReadLike(expected), expected);
  // "\n" alone ends a line too.
  client.Send("ms nl 1\nn\r\nmg nl v\n");
  EXPECT_EQ(client.ReadLike("HD\r\nVA 1\r\nn\r\n"), "HD\r\nVA 1\r\nn\r\n");
  ExpectInSync(client);
}

TEST_F(MisbehavingMemcachedTest, DuplicateAnswerIsWrittenAgainBeforeTheNextAnswer) {
  proxy_.Arm(Arm(Fault::kDuplicateAnswer, "mg"));
  RawConnection client(proxy_.address());
  client.Send("mg a v O1\r\nmg b v O2\r\n");
  EXPECT_EQ(client.ReadLike(kAnswerA + kAnswerA + kAnswerB), kAnswerA + kAnswerA + kAnswerB);
  ExpectInSync(client);
  EXPECT_EQ(proxy_.faults_applied(), 1);
  EXPECT_FALSE(proxy_.WaitForStrayWritten(1, milliseconds(0)));
}

TEST_F(MisbehavingMemcachedTest, AnAnswerThatReleasesADeferredWriteIsNotFaulted) {
  proxy_.Arm(Arm(Fault::kDuplicateAnswer, "mg", 2));
  RawConnection client(proxy_.address());
  client.Send("mg a v O1\r\nmg b v O2\r\nmg a v O3\r\nmg b v O4\r\n");
  const std::string a3 = "VA 1 O3\r\nx\r\n";
  const std::string b4 = "VA 1 O4\r\ny\r\n";
  const std::string expected = kAnswerA + kAnswerA + kAnswerB + a3 + a3 + b4;  // A A B C C D
  EXPECT_EQ(client.ReadLike(expected), expected);
  ExpectInSync(client);
  EXPECT_EQ(proxy_.faults_applied(), 2);
}

TEST_F(MisbehavingMemcachedTest, DuplicateAnswerLandsOnAnIdleConnection) {
  proxy_.Arm(Arm(Fault::kDuplicateAnswer, "mg"));
  RawConnection client(proxy_.address());
  client.Send("mg a v O1\r\n");
  EXPECT_EQ(client.ReadLike(kAnswerA), kAnswerA);
  ASSERT_TRUE(proxy_.WaitForStrayWritten(1, kTimeout));
  EXPECT_EQ(client.ReadLike(kAnswerA), kAnswerA);
  ExpectInSync(client);
}

TEST_F(MisbehavingMemcachedTest, SwapOrderWritesTheHeldAnswerAfterTheNextOne) {
  proxy_.Arm(Arm(Fault::kSwapOrder, "mg"));
  RawConnection client(proxy_.address());
  client.Send("mg a v O1\r\nmg b v O2\r\n");
  EXPECT_EQ(client.ReadLike(kAnswerB + kAnswerA), kAnswerB + kAnswerA);
  ExpectInSync(client);
  EXPECT_EQ(proxy_.faults_applied(), 1);
}

TEST_F(MisbehavingMemcachedTest, SwapOrderPassesOverEmptyAnswersEvenPastTheClientsMn) {
  proxy_.Arm(Arm(Fault::kSwapOrder, "mg"));
  RawConnection client(proxy_.address());
  client.Send("mg a v O1\r\nmg missing v q O2\r\nmn\r\n");
  EXPECT_EQ(client.ReadLike("MN\r\n" + kAnswerA), "MN\r\n" + kAnswerA);
  ExpectInSync(client);
}

TEST_F(MisbehavingMemcachedTest, SwapOrderWritesTheHeldAnswerAfter100msAlone) {
  proxy_.Arm(Arm(Fault::kSwapOrder, "mg"));
  RawConnection client(proxy_.address());
  const Clock::time_point start = Clock::now();
  client.Send("mg a v O1\r\n");
  EXPECT_EQ(client.ReadLike(kAnswerA), kAnswerA);
  EXPECT_GE(Clock::now() - start, milliseconds(100));
  ExpectInSync(client);
}

TEST_F(MisbehavingMemcachedTest, SwapOpaqueExchangesTheTokensOfTwoAnswers) {
  proxy_.Arm(Arm(Fault::kSwapOpaque, "mg"));
  RawConnection client(proxy_.address());
  client.Send("mg a v\r\n");  // no O token: not eligible, not counted
  EXPECT_EQ(client.ReadLike("VA 1\r\nx\r\n"), "VA 1\r\nx\r\n");
  EXPECT_EQ(proxy_.faults_applied(), 0);
  client.Send("mg a v O1\r\nmg b v O2\r\n");
  const std::string exchanged = "VA 1 O2\r\nx\r\nVA 1 O1\r\ny\r\n";
  EXPECT_EQ(client.ReadLike(exchanged), exchanged);
  ExpectInSync(client);
  EXPECT_EQ(proxy_.faults_applied(), 1);
}

TEST_F(MisbehavingMemcachedTest, WrongKeyReplacesTheKeyToken) {
  MisbehavingMemcached::Arming arming = Arm(Fault::kWrongKey, "mg");
  arming.wrong_key = "zz";
  proxy_.Arm(arming);
  RawConnection client(proxy_.address());
  client.Send("mg a v O1\r\n");  // no k token: not eligible, not counted
  EXPECT_EQ(client.ReadLike(kAnswerA), kAnswerA);
  client.Send("mg a v k O2\r\n");
  EXPECT_EQ(client.ReadLike("VA 1 kzz O2\r\nx\r\n"), "VA 1 kzz O2\r\nx\r\n");
  client.Send("mg a v k O3\r\n");  // count used up
  EXPECT_EQ(client.ReadLike("VA 1 ka O3\r\nx\r\n"), "VA 1 ka O3\r\nx\r\n");
  EXPECT_EQ(proxy_.faults_applied(), 1);
}

TEST_F(MisbehavingMemcachedTest, UnsolicitedValueFollowsOnceTheConnectionIsIdle) {
  proxy_.Arm(Arm(Fault::kUnsolicited, "mg"));
  RawConnection client(proxy_.address());
  client.Send("mg a v O7\r\n");
  EXPECT_EQ(client.ReadLike("VA 1 O7\r\nx\r\n"), "VA 1 O7\r\nx\r\n");
  ASSERT_TRUE(proxy_.WaitForStrayWritten(1, kTimeout));
  const std::string stray = "VA 5 kotherkey O7\r\nstray\r\n";
  EXPECT_EQ(client.ReadLike(stray), stray);
  ExpectInSync(client);
}

TEST_F(MisbehavingMemcachedTest, GarbageReplacesTheAnswer) {
  proxy_.Arm(Arm(Fault::kGarbage, "mg"));
  RawConnection client(proxy_.address());
  const std::string garbage = "\x01\xffgarbage \x7f\r\n";
  client.Send("mg a v O1\r\n");
  EXPECT_EQ(client.ReadLike(garbage), garbage);
  client.Send("mg a v O1\r\n");
  EXPECT_EQ(client.ReadLike(kAnswerA), kAnswerA);
}

TEST_F(MisbehavingMemcachedTest, ReplaceWritesTheGivenBytesInsteadOfTheAnswer) {
  MisbehavingMemcached::Arming arming = Arm(Fault::kReplace, "mg");
  arming.replacement = "ERROR\r\n";
  proxy_.Arm(arming);
  RawConnection client(proxy_.address());
  client.Send("mg a v O1\r\n");
  EXPECT_EQ(client.ReadLike("ERROR\r\n"), "ERROR\r\n");
  client.Send("mg a v O1\r\n");
  EXPECT_EQ(client.ReadLike(kAnswerA), kAnswerA);
}

TEST_F(MisbehavingMemcachedTest, HugeLengthAnnouncesAValueThatNeverComes) {
  proxy_.Arm(Arm(Fault::kHugeLength, "mg", 2));
  RawConnection client(proxy_.address());
  client.Send("mg a v O1\r\n");
  EXPECT_EQ(client.ReadLike("VA 4294967296 O1\r\n"), "VA 4294967296 O1\r\n");
  ExpectInSync(client);  // later requests are answered normally
  client.Send("mg a v\r\n");
  EXPECT_EQ(client.ReadLike("VA 4294967296\r\n"), "VA 4294967296\r\n");
  ExpectInSync(client);
}

TEST_F(MisbehavingMemcachedTest, TrickleDeliversTheWholeAnswerOneByteAMillisecond) {
  const std::string value(64, 'v');
  RawConnection client(proxy_.address());
  client.Send("ms t 64\r\n" + value + "\r\n");
  EXPECT_EQ(client.ReadLike("HD\r\n"), "HD\r\n");
  proxy_.Arm(Arm(Fault::kTrickle, "mg"));
  const std::string answer = "VA 64 O1\r\n" + value + "\r\n";
  const Clock::time_point start = Clock::now();
  client.Send("mg t v O1\r\n");
  EXPECT_EQ(client.ReadLike(answer), answer);
  EXPECT_GE(Clock::now() - start, milliseconds(answer.size() - 1));
  EXPECT_GT(client.chunks(), 2);  // 1 for the HD; the answer in pieces
  ExpectInSync(client);
}

TEST_F(MisbehavingMemcachedTest, CloseMidValueWritesHalfTheAnswerThenCloses) {
  RawConnection client(proxy_.address());
  client.Send("ms h 10\r\n0123456789\r\n");
  EXPECT_EQ(client.ReadLike("HD\r\n"), "HD\r\n");
  proxy_.Arm(Arm(Fault::kCloseMidValue, "mg"));
  client.Send("mg h v O1\r\n");  // "VA 10 O1\r\n0123456789\r\n": 22 bytes
  EXPECT_EQ(client.Read(22), "VA 10 O1\r\n0");
  EXPECT_TRUE(client.ReadsEof());
  RawConnection again(proxy_.address());
  again.Send("mg h v O2\r\n");
  EXPECT_EQ(again.ReadLike("VA 10 O2\r\n0123456789\r\n"), "VA 10 O2\r\n0123456789\r\n");
  EXPECT_EQ(proxy_.connections_accepted(), 2);
}

TEST_F(MisbehavingMemcachedTest, SilentForwardsTheRequestButDropsItsAnswer) {
  proxy_.Arm(Arm(Fault::kSilent, "ms"));
  RawConnection client(proxy_.address());
  client.Send("ms a 1 O1\r\nw\r\n");
  ASSERT_TRUE(proxy_.WaitForFaults(1, kTimeout));
  client.Send("mg a v O2\r\n");  // the store happened; its HD never came
  EXPECT_EQ(client.ReadLike("VA 1 O2\r\nw\r\n"), "VA 1 O2\r\nw\r\n");
  // A quiet request with an empty answer counts for kSilent.
  proxy_.Arm(Arm(Fault::kSilent, "ms"));
  client.Send("ms a 1 q\r\nx\r\n");
  ASSERT_TRUE(proxy_.WaitForFaults(2, kTimeout));
  client.Send("mg a v O1\r\n");
  EXPECT_EQ(client.ReadLike(kAnswerA), kAnswerA);
}

TEST_F(MisbehavingMemcachedTest, CountLimitsFaultsToNonEmptyAnswersOfAnyCommandButMn) {
  proxy_.Arm(Arm(Fault::kGarbage, "", 2));
  const std::string garbage = "\x01\xffgarbage \x7f\r\n";
  RawConnection client(proxy_.address());
  client.Send("mg missing v q\r\nmn\r\n");  // empty answer and the client's mn: not counted
  EXPECT_EQ(client.ReadLike("MN\r\n"), "MN\r\n");
  EXPECT_EQ(proxy_.faults_applied(), 0);
  client.Send("ms c 1\r\nz\r\nmg a v O1\r\nmg a v O1\r\n");
  EXPECT_EQ(client.ReadLike(garbage + garbage + kAnswerA), garbage + garbage + kAnswerA);
  EXPECT_EQ(proxy_.faults_applied(), 2);
}

TEST_F(MisbehavingMemcachedTest, CommandFilterMatchesOnlyThatCommand) {
  proxy_.Arm(Arm(Fault::kGarbage, "md", 5));
  const std::string garbage = "\x01\xffgarbage \x7f\r\n";
  RawConnection client(proxy_.address());
  client.Send("mg a v O1\r\nms c 1\r\nz\r\nmd c\r\nmn\r\n");
  EXPECT_EQ(client.ReadLike(kAnswerA + "HD\r\n" + garbage + "MN\r\n"),
            kAnswerA + "HD\r\n" + garbage + "MN\r\n");
  proxy_.Arm(Arm(Fault::kGarbage, "mn"));  // the client's own mn, when named
  client.Send("mn\r\n");
  EXPECT_EQ(client.ReadLike(garbage), garbage);
  EXPECT_EQ(proxy_.faults_applied(), 2);
}

TEST_F(MisbehavingMemcachedTest, DisarmRestoresPassThroughAndArmReplaces) {
  const std::string garbage = "\x01\xffgarbage \x7f\r\n";
  RawConnection client(proxy_.address());
  proxy_.Arm(Arm(Fault::kGarbage, "mg", 10));
  client.Send("mg a v O1\r\n");
  EXPECT_EQ(client.ReadLike(garbage), garbage);
  proxy_.Disarm();
  client.Send("mg a v O1\r\n");
  EXPECT_EQ(client.ReadLike(kAnswerA), kAnswerA);
  proxy_.Arm(Arm(Fault::kGarbage, "mg", 10));
  proxy_.Arm(Arm(Fault::kHugeLength, "mg"));
  client.Send("mg a v O1\r\nmg a v O1\r\n");
  EXPECT_EQ(client.ReadLike("VA 4294967296 O1\r\n" + kAnswerA), "VA 4294967296 O1\r\n" + kAnswerA);
  EXPECT_EQ(proxy_.faults_applied(), 2);
}

TEST_F(MisbehavingMemcachedTest, ClientIsClosedWhenMemcachedGoesAway) {
  RawConnection client(proxy_.address());
  ExpectInSync(client);
  server_.Stop();
  EXPECT_TRUE(client.ReadsEof());
  RawConnection later(proxy_.address());  // accepted, but there is no upstream
  EXPECT_TRUE(later.ReadsEof());
  EXPECT_EQ(proxy_.connections_accepted(), 2);
}

TEST_F(MisbehavingMemcachedTest, DestructorIsPromptWithWorkInFlightAndMemcachedPaused) {
  auto proxy = std::make_unique<MisbehavingMemcached>(server_.address());
  RawConnection trickling(proxy->address());  // 1000 bytes: a second to write
  trickling.Send("ms big 1000\r\n" + std::string(1000, 'b') + "\r\n");
  EXPECT_EQ(trickling.ReadLike("HD\r\n"), "HD\r\n");
  proxy->Arm(Arm(Fault::kTrickle, "mg"));
  trickling.Send("mg big v\r\n");
  ASSERT_TRUE(proxy->WaitForFaults(1, kTimeout));
  proxy->Arm(Arm(Fault::kSwapOrder, "mg"));
  RawConnection holding(proxy->address());
  holding.Send("mg a v\r\n");
  ASSERT_TRUE(proxy->WaitForFaults(2, kTimeout));
  server_.Pause();
  RawConnection waiting(proxy->address());  // its request never gets an answer
  waiting.Send("mg a v\r\n");
  const Clock::time_point start = Clock::now();
  proxy.reset();
  EXPECT_LT(Clock::now() - start, milliseconds(500));
  server_.Resume();
  EXPECT_TRUE(waiting.ReadsEof());
}

TEST_F(MisbehavingMemcachedTest, WorksInFrontOfAUnixSocket) {
  MemcachedServer::Options options;
  options.unix_socket = true;
  MemcachedServer unix_server(options);
  ASSERT_TRUE(unix_server.running());
  MisbehavingMemcached proxy(unix_server.address());
  RawConnection client(proxy.address());
  client.Send("ms u 1\r\nu\r\nmg u v\r\n");
  EXPECT_EQ(client.ReadLike("HD\r\nVA 1\r\nu\r\n"), "HD\r\nVA 1\r\nu\r\n");
}

TEST_F(MisbehavingMemcachedTest, ArmingWhileConnectionsServeIsSafe) {
  auto serve = [this](int c) {
    RawConnection client(proxy_.address());
    for (int i = 0; i < 200; ++i) {
      const std::string opaque = std::to_string(c * 1000 + i);
      client.Send("mg a v O" + opaque + "\r\n");
      const std::string expected = "VA 1 O" + opaque + "\r\nx\r\n";
      ASSERT_EQ(client.ReadLike(expected), expected);
    }
  };
  std::atomic<int> clients_done{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&, c] {
      serve(c);
      ++clients_done;
    });
  }
  while (clients_done.load() < 3) {  // answers to mg never match an md arming
    proxy_.Arm(Arm(Fault::kGarbage, "md", 1000));
    proxy_.Disarm();
    EXPECT_EQ(proxy_.faults_applied(), 0);
  }
  for (std::thread& client : clients) client.join();
  EXPECT_EQ(proxy_.connections_accepted(), 3);
}

}  // namespace
}  // namespace tiercache::testing
