// The demo's SQLite data source: generated once per shape, answers each key
// with that key's record, counts only real loads, and names what it cannot
// answer.

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "demo/database.h"
#include "gtest/gtest.h"

namespace tiercache_demo {
namespace {

class DatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/tiercache-demo-db-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/demo.db";
  }
  void TearDown() override {
    std::remove(path_.c_str());
    ::rmdir(dir_.c_str());
  }

  std::string dir_, path_;
  const DatasetShape shape_{.users = 50, .orders_per_user = 5, .seed = 3};
};

TEST_F(DatabaseTest, GeneratesOnceThenReusesTheFile) {
  EXPECT_EQ(EnsureDataset(path_, shape_).value(), true);
  EXPECT_EQ(EnsureDataset(path_, shape_).value(), false);
  DatasetShape other = shape_;
  other.orders_per_user = 6;
  EXPECT_EQ(EnsureDataset(path_, other).value(), true);  // another shape: made again
}

TEST_F(DatabaseTest, AFileThatIsNotADemoDatabaseIsNeverOverwritten) {
  std::ofstream(path_) << "somebody's notes";
  absl::StatusOr<bool> made = EnsureDataset(path_, shape_);
  EXPECT_EQ(made.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(made.status().message().find("is not a tiercache demo database"), std::string::npos)
      << made.status();
  std::string kept;
  std::getline(std::ifstream(path_), kept);
  EXPECT_EQ(kept, "somebody's notes");
}

TEST_F(DatabaseTest, WhatAnInterruptedGenerationLeftIsReplaced) {
  std::ofstream(path_ + ".tmp") << "half a database";
  EXPECT_EQ(EnsureDataset(path_, shape_).value(), true);
  EXPECT_TRUE(Database::Open(path_, shape_).ok());
  std::remove((path_ + ".tmp").c_str());
}

TEST_F(DatabaseTest, AReplicaRefusesADatabaseOfAnotherShape) {
  ASSERT_TRUE(EnsureDataset(path_, shape_).ok());
  DatasetShape other = shape_;
  other.seed = 4;
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path_, other);
  EXPECT_EQ(db.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(db.status().message().find("holds another dataset"), std::string::npos) << db.status();
}

TEST_F(DatabaseTest, EachKeyGetsItsOwnRecordAndOnlyLoadsAreCounted) {
  ASSERT_TRUE(EnsureDataset(path_, shape_).ok());
  QueryCounters counters;
  std::unique_ptr<Database> db = *Database::Open(path_, shape_, &counters);
  for (int id : {0, 7, 49}) {
    absl::StatusOr<std::string> record = db->Fetch(UserKey(id));
    ASSERT_TRUE(record.ok()) << record.status();
    EXPECT_EQ(record->rfind(absl::StrCat("{\"user_id\":", id, ","), 0), 0u) << *record;
    EXPECT_NE(record->find("\"cohort\":{\"users\":"), std::string::npos) << *record;
    // The same statement again gives the same bytes: a check by comparison works.
    EXPECT_EQ(db->Fetch(UserKey(id), /*count=*/false).value(), *record);
  }
  absl::StatusOr<std::string> report = db->Fetch(kTopSpendersKey);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rfind("[{\"user_id\":", 0), 0u) << *report;
  EXPECT_EQ(counters.queries.load(), 4u);
  EXPECT_EQ(counters.outage_queries.load(), 0u);
  db->set_outage_at(0);  // the outage began long ago
  ASSERT_TRUE(db->Fetch(UserKey(1)).ok());
  EXPECT_EQ(counters.outage_queries.load(), 1u);
}

TEST_F(DatabaseTest, KeysItCannotAnswerAreNamed) {
  ASSERT_TRUE(EnsureDataset(path_, shape_).ok());
  std::unique_ptr<Database> db = *Database::Open(path_, shape_);
  absl::StatusOr<std::string> missing = db->Fetch(UserKey(50));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "no record in the demo database for user:50");
  // Only canonical keys: "user:07" is not user 7's key.
  for (const char* key : {"order:1", "user:", "user:12x", "", "user: 7", "user:+7", "user:07",
                          "user:7\n", "user:-1", "user:99999999999999999999"}) {
    absl::StatusOr<std::string> bad = db->Fetch(key);
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_EQ(bad.status().message(), absl::StrCat("no such record in the demo database: ", key));
  }
  // The connection still works after them.
  EXPECT_TRUE(db->Fetch(UserKey(2)).ok());
}

TEST_F(DatabaseTest, AMissingFileOrABadShapeIsAnError) {
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(dir_ + "/absent.db", shape_);
  ASSERT_FALSE(db.ok());
  EXPECT_NE(db.status().message().find("absent.db"), std::string::npos) << db.status();
  EXPECT_EQ(EnsureDataset(path_, {.users = 0, .orders_per_user = 5, .seed = 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(DatabaseTest, TheLoadIsMeasured) {
  ASSERT_TRUE(EnsureDataset(path_, shape_).ok());
  absl::StatusOr<LoadCost> cost = MeasureLoad(path_, shape_, 20);
  ASSERT_TRUE(cost.ok()) << cost.status();
  EXPECT_GT(cost->p50_ms, 0);
  EXPECT_GE(cost->p99_ms, cost->p50_ms);
  EXPECT_GT(cost->profile_bytes, 100u);
  EXPECT_EQ(MeasureLoad(path_, shape_, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tiercache_demo
