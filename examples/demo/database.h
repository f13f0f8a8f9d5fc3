// The demo's data source: a real SQLite database of users and their orders,
// generated once into a file and opened by every replica process.
//
// A load is what an application would cache: a user's profile, built by one
// SQL statement (an aggregate over the user's orders, spend by month, counts
// by status, and the latest orders as JSON). It is real work for SQLite — an
// index range scan, strftime and JSON building over every order of the user
// — so the demo's database costs what it costs, measured (MeasureLoad), not
// a sleep. One report, the top spenders of the last 90 days, scans a
// quarter-year of every user's orders: the stampede's key, expensive enough
// that every thread asks for it while it is being computed.
//
// Threads: a `Database` is one SQLite connection and is used by one thread
// at a time; each request thread opens its own (SQLite's "multi-thread"
// mode, no connection shared). The file is opened read-only: nothing in the
// demo writes to it after Generate.

#ifndef TIERCACHE_EXAMPLES_DEMO_DATABASE_H_
#define TIERCACHE_EXAMPLES_DEMO_DATABASE_H_

#include <sqlite3.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tiercache_demo {

// What the generated file holds. A file made with other figures (or by
// another version of the schema) is generated again.
struct DatasetShape {
  int64_t users = 10000;
  int64_t orders_per_user = 100;  // on average; each user has 1..2x-1 of it
  int64_t seed = 1;
};

// The key of user `id`'s profile, and of the stampede's report.
std::string UserKey(int64_t id);
inline constexpr std::string_view kTopSpendersKey = "report:top-spenders-90d";

// Makes the database at `path` unless a file there already holds `shape`
// (checked in its meta table). Written to `path`.tmp, synced and renamed, so
// a replica never opens half a database. Returns whether it generated.
// FailedPrecondition, touching nothing, when `path` is some other file: only
// a demo database (of another shape) is ever replaced.
absl::StatusOr<bool> EnsureDataset(const std::string& path, const DatasetShape& shape);

// Counts the queries of every connection of a process (each replica reports
// its own), and apart those made from `outage_at` on.
struct QueryCounters {
  std::atomic<uint64_t> queries{0};
  std::atomic<uint64_t> outage_queries{0};
};

class Database {
 public:
  // Opens `path` read-only; FailedPrecondition unless it holds `shape` (a
  // run checks answers against its own dataset). `counters` (optional)
  // outlives the Database.
  static absl::StatusOr<std::unique_ptr<Database>> Open(const std::string& path,
                                                        const DatasetShape& shape,
                                                        QueryCounters* counters = nullptr);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // The record for `key`: a user's profile ("user:<id>") or the report
  // (kTopSpendersKey), as JSON. NotFound for a key the database does not
  // have; InvalidArgument for one it cannot have. Counted as a query unless
  // `count` is false (the demo's spot checks are not loads).
  absl::StatusOr<std::string> Fetch(std::string_view key, bool count = true);

  // Queries from this time on are also counted in outage_queries.
  void set_outage_at(int64_t unix_ms) { outage_at_ms_ = unix_ms; }
  // Slept after each counted query: the round trip to a database server
  // across a network, which an embedded SQLite does not have.
  void set_added_latency(absl::Duration latency) { added_latency_ = latency; }

 private:
  Database(sqlite3* db, QueryCounters* counters) : db_(db), counters_(counters) {}
  absl::StatusOr<std::string> RunOneText(sqlite3_stmt* statement, std::string_view key);

  sqlite3* db_;
  sqlite3_stmt* profile_ = nullptr;
  sqlite3_stmt* report_ = nullptr;
  QueryCounters* counters_;
  int64_t outage_at_ms_ = INT64_MAX;
  absl::Duration added_latency_ = absl::ZeroDuration();
};

// What one load costs: the profile query for `samples` users drawn evenly,
// each timed on this thread (CPU-bound: the file is in the page cache after
// the first pass, which is not timed).
struct LoadCost {
  double p50_ms = 0;
  double p99_ms = 0;
  double mean_ms = 0;
  double report_ms = 0;      // one run of the report, after an untimed one
  size_t profile_bytes = 0;  // a profile's average size
};
absl::StatusOr<LoadCost> MeasureLoad(const std::string& path, const DatasetShape& shape,
                                     int samples);

// "SQLite 3.40.1", for the report.
std::string SqliteVersion();

}  // namespace tiercache_demo

#endif  // TIERCACHE_EXAMPLES_DEMO_DATABASE_H_
