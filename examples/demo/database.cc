#include "database.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace tiercache_demo {
namespace {

// Bump when the schema, the generator or the queries change: files made by
// another version are generated again.
constexpr int kSchemaVersion = 2;

// The dataset's "now" (2026-01-01T00:00:00Z), fixed so that the generated
// file and every query's answer depend on the shape alone.
constexpr int64_t kNow = 1767225600;
constexpr int64_t kDay = 86400;

constexpr const char* kSchema = R"sql(
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users(
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  email TEXT NOT NULL,
  plan TEXT NOT NULL,
  country TEXT NOT NULL,
  joined INTEGER NOT NULL);
CREATE TABLE orders(
  id INTEGER PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users(id),
  placed INTEGER NOT NULL,
  status TEXT NOT NULL,
  total_cents INTEGER NOT NULL,
  items INTEGER NOT NULL);
)sql";

// Made after the rows are in: one sort per index instead of a B-tree insert
// per row (about 3x faster to generate).
// orders_by_user covers the cohort's sums (no table lookups: measured 2x
// faster); users_by_joined finds a user's cohort.
constexpr const char* kIndexes = R"sql(
CREATE INDEX orders_by_user ON orders(user_id, placed, total_cents);
CREATE INDEX orders_by_time ON orders(placed);
CREATE INDEX users_by_joined ON users(joined);
)sql";

// A user's profile: the one statement a load runs. Its costly part is the
// cohort: the lifetime spend of every user who joined within a week of this
// one (about 1 in 130 users, each summed over their orders), to rank them.
constexpr const char* kProfileQuery = R"sql(
SELECT json_object(
  'user_id', u.id, 'name', u.name, 'email', u.email, 'plan', u.plan,
  'country', u.country, 'joined', u.joined,
  'orders', s.n, 'spent_cents', s.spent, 'first_order', s.first, 'last_order', s.last,
  'by_status', (SELECT json_group_object(status, n) FROM
      (SELECT status, count(*) AS n FROM orders WHERE user_id = u.id
       GROUP BY status ORDER BY status)),
  'by_month', (SELECT json_group_array(json_array(m, c)) FROM
      (SELECT strftime('%Y-%m', placed, 'unixepoch') AS m, sum(total_cents) AS c
       FROM orders WHERE user_id = u.id GROUP BY m ORDER BY m DESC LIMIT 12)),
  'latest', (SELECT json_group_array(json_object('id', id, 'placed', placed,
                 'status', status, 'total_cents', total_cents, 'items', items)) FROM
      (SELECT id, placed, status, total_cents, items FROM orders WHERE user_id = u.id
       ORDER BY placed DESC, id DESC LIMIT 10)),
  'cohort', (SELECT json_object('users', count(*), 'rank', 1 + sum(spent > s.spent),
                                'average_cents', CAST(avg(spent) AS INTEGER)) FROM
      (SELECT (SELECT coalesce(sum(total_cents), 0) FROM orders WHERE user_id = c.id) AS spent
       FROM users AS c WHERE c.joined BETWEEN u.joined - 604800 AND u.joined + 604800)))
FROM users AS u,
  (SELECT count(*) AS n, coalesce(sum(total_cents), 0) AS spent,
          min(placed) AS first, max(placed) AS last
   FROM orders WHERE user_id = ?1) AS s
WHERE u.id = ?1
)sql";

// The stampede's key: the ten top spenders of the last 90 days.
constexpr const char* kReportQuery = R"sql(
SELECT json_group_array(json_object('user_id', user_id, 'name', name,
                                    'spent_cents', spent, 'orders', n)) FROM
  (SELECT o.user_id AS user_id, u.name AS name, sum(o.total_cents) AS spent, count(*) AS n
   FROM orders AS o JOIN users AS u ON u.id = o.user_id
   WHERE o.placed >= ?1
   GROUP BY o.user_id ORDER BY spent DESC, o.user_id LIMIT 10)
)sql";

absl::Status SqliteError(sqlite3* db, std::string_view what) {
  return absl::InternalError(absl::StrCat("sqlite: ", std::string(what), ": ",
                                          db != nullptr ? sqlite3_errmsg(db) : "out of memory"));
}

// `what`: the step, for the message ("generating <path>: create the schema").
absl::Status Exec(sqlite3* db, const char* sql, std::string_view what) {
  char* error = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    absl::Status s = absl::InternalError(
        absl::StrCat("sqlite: ", std::string(what), ": ", error != nullptr ? error : "?"));
    sqlite3_free(error);
    return s;
  }
  return absl::OkStatus();
}

// Closes a connection (and finalizes a statement) when the scope ends.
struct Closer {
  sqlite3* db = nullptr;
  sqlite3_stmt* statement = nullptr;
  ~Closer() {
    sqlite3_finalize(statement);
    sqlite3_close(db);
  }
};

std::string ShapeText(const DatasetShape& shape) {
  return absl::StrFormat("v%d users=%d orders_per_user=%d seed=%d", kSchemaVersion, shape.users,
                         shape.orders_per_user, shape.seed);
}

// The shape the demo database at `path` holds (its meta row). NotFound when
// there is no file; FailedPrecondition when the file is not a demo database,
// which the demo must never overwrite (--database could name anything).
absl::StatusOr<std::string> ShapeOf(sqlite3* db, const std::string& path) {
  Closer c;  // the statement only: `db` is the caller's
  const char* text = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'shape'", -1, &c.statement,
                         nullptr) == SQLITE_OK &&
      sqlite3_step(c.statement) == SQLITE_ROW) {
    text = reinterpret_cast<const char*>(sqlite3_column_text(c.statement, 0));
  }
  if (text == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " is not a tiercache demo database; choose another --database or remove it"));
  }
  return std::string(text);
}

absl::StatusOr<std::string> ShapeOf(const std::string& path) {
  if (::access(path.c_str(), F_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("no database at ", path));
  }
  Closer c;
  if (sqlite3_open_v2(path.c_str(), &c.db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    return SqliteError(c.db, absl::StrCat("cannot open ", path));
  }
  return ShapeOf(c.db, path);
}

absl::Status Generate(const std::string& path, const DatasetShape& shape) {
  Closer c;
  if (sqlite3_open_v2(path.c_str(), &c.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    return SqliteError(c.db, absl::StrCat("cannot create ", path));
  }
  // Nothing to protect while generating: a failed run leaves a temporary
  // file that the next one removes first. (EnsureDataset syncs the file
  // before renaming it into place.)
  const std::string generating = absl::StrCat("generating ", path);
  if (absl::Status s =
          Exec(c.db, "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;", generating);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Exec(c.db, kSchema, generating + ": the schema"); !s.ok()) return s;
  if (absl::Status s = Exec(c.db, "BEGIN", generating); !s.ok()) return s;

  std::mt19937_64 rng(static_cast<uint64_t>(shape.seed));  // the same stream everywhere
  auto below = [&rng](int64_t n) { return static_cast<int64_t>(rng() % static_cast<uint64_t>(n)); };
  static constexpr std::array<const char*, 16> kSyllables = {"ka", "lo",  "mi", "ra",  "te",  "su",
                                                             "no", "vi",  "da", "ren", "sha", "po",
                                                             "li", "mar", "ta", "ek"};
  static constexpr std::array<const char*, 3> kPlans = {"free", "pro", "team"};
  static constexpr std::array<const char*, 8> kCountries = {"DE", "FR", "US", "JP",
                                                            "BR", "IN", "NG", "SE"};
  // Most orders are delivered; a few are still moving or went wrong.
  static constexpr std::array<const char*, 10> kStatuses = {
      "delivered", "delivered", "delivered", "delivered", "delivered",
      "delivered", "delivered", "shipped",   "cancelled", "returned"};

  sqlite3_stmt* user = nullptr;
  sqlite3_stmt* order = nullptr;
  if (sqlite3_prepare_v2(c.db, "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)", -1, &user, nullptr) !=
          SQLITE_OK ||
      sqlite3_prepare_v2(c.db, "INSERT INTO orders VALUES (NULL, ?, ?, ?, ?, ?)", -1, &order,
                         nullptr) != SQLITE_OK) {
    sqlite3_finalize(user);
    return SqliteError(c.db, "prepare insert");
  }
  absl::Status status;
  for (int64_t id = 0; id < shape.users && status.ok(); ++id) {
    std::string name;
    for (int64_t i = 0, n = 2 + below(2); i < n; ++i) name += kSyllables[below(16)];
    name[0] = static_cast<char>(name[0] - 'a' + 'A');
    const std::string email = absl::StrFormat("%s.%d@example.com", name, id);
    const int64_t joined = kNow - 30 * kDay - below(5 * 365 * kDay);
    sqlite3_bind_int64(user, 1, id);
    sqlite3_bind_text(user, 2, name.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(user, 3, email.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(user, 4, kPlans[below(3)], -1, SQLITE_STATIC);
    sqlite3_bind_text(user, 5, kCountries[below(8)], -1, SQLITE_STATIC);
    sqlite3_bind_int64(user, 6, joined);
    if (sqlite3_step(user) != SQLITE_DONE) status = SqliteError(c.db, "insert user");
    sqlite3_reset(user);
    const int64_t orders = 1 + below(2 * shape.orders_per_user - 1);
    for (int64_t o = 0; o < orders && status.ok(); ++o) {
      sqlite3_bind_int64(order, 1, id);
      sqlite3_bind_int64(order, 2, joined + below(kNow - joined));
      sqlite3_bind_text(order, 3, kStatuses[below(10)], -1, SQLITE_STATIC);
      sqlite3_bind_int64(order, 4, 199 + below(25000));
      sqlite3_bind_int64(order, 5, 1 + below(6));
      if (sqlite3_step(order) != SQLITE_DONE) status = SqliteError(c.db, "insert order");
      sqlite3_reset(order);
    }
  }
  sqlite3_finalize(user);
  sqlite3_finalize(order);
  if (!status.ok()) return status;
  if (absl::Status s = Exec(c.db, kIndexes, generating + ": the indexes"); !s.ok()) return s;
  const std::string meta = absl::StrFormat(
      "INSERT INTO meta VALUES ('shape', '%s'); COMMIT; ANALYZE;", ShapeText(shape));
  return Exec(c.db, meta.c_str(), generating + ": the meta row");
}

}  // namespace

std::string UserKey(int64_t id) { return absl::StrFormat("user:%d", id); }

absl::StatusOr<bool> EnsureDataset(const std::string& path, const DatasetShape& shape) {
  if (shape.users < 1 || shape.orders_per_user < 1) {
    return absl::InvalidArgumentError("the dataset needs at least one user and one order each");
  }
  absl::StatusOr<std::string> current = ShapeOf(path);
  if (current.ok() && *current == ShapeText(shape)) return false;
  if (!current.ok() && !absl::IsNotFound(current.status())) return current.status();
  // A fixed name: what an interrupted run left is replaced, not piled up.
  const std::string temporary = absl::StrCat(path, ".tmp");
  std::remove(temporary.c_str());
  absl::Status s = Generate(temporary, shape);
  if (s.ok()) {
    // On disk before it takes the name: no half-written file at `path`
    // after a crash (the generation itself runs with synchronous = OFF).
    const int fd = ::open(temporary.c_str(), O_RDONLY);
    if (fd < 0 || ::fsync(fd) != 0) {
      s = absl::InternalError(absl::StrCat("cannot sync ", temporary, ": ", std::strerror(errno)));
    }
    if (fd >= 0) ::close(fd);
  }
  if (s.ok() && std::rename(temporary.c_str(), path.c_str()) != 0) {
    s = absl::InternalError(
        absl::StrCat("cannot rename ", temporary, " to ", path, ": ", std::strerror(errno)));
  }
  if (!s.ok()) {
    std::remove(temporary.c_str());
    return s;
  }
  return true;
}

absl::StatusOr<std::unique_ptr<Database>> Database::Open(const std::string& path,
                                                         const DatasetShape& shape,
                                                         QueryCounters* counters) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    absl::Status s = SqliteError(db, absl::StrCat("cannot open ", path));
    sqlite3_close(db);
    return s;
  }
  std::unique_ptr<Database> database(new Database(db, counters));
  // Another run may have made it again with another shape meanwhile: its
  // answers would not be the ones this run checks against.
  absl::StatusOr<std::string> held = ShapeOf(db, path);
  if (!held.ok()) return held.status();
  if (*held != ShapeText(shape)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s holds another dataset (%s) than this run's (%s)", path, *held, ShapeText(shape)));
  }
  if (sqlite3_prepare_v3(db, kProfileQuery, -1, SQLITE_PREPARE_PERSISTENT, &database->profile_,
                         nullptr) != SQLITE_OK ||
      sqlite3_prepare_v3(db, kReportQuery, -1, SQLITE_PREPARE_PERSISTENT, &database->report_,
                         nullptr) != SQLITE_OK) {
    return SqliteError(db, absl::StrCat("prepare the demo's queries on ", path));
  }
  return database;
}

Database::~Database() {
  sqlite3_finalize(profile_);
  sqlite3_finalize(report_);
  sqlite3_close(db_);
}

absl::StatusOr<std::string> Database::Fetch(std::string_view key, bool count) {
  sqlite3_stmt* statement = nullptr;
  if (key == kTopSpendersKey) {
    statement = report_;
    sqlite3_bind_int64(statement, 1, kNow - 90 * kDay);
  } else {
    // Canonical keys only (no sign, spaces or leading zeros): one record has
    // one key, or a check by key would pass another key's record.
    int64_t id = 0;
    const std::string_view digits = key.substr(std::min<size_t>(5, key.size()));
    if (key.substr(0, 5) != "user:" || digits.empty() || digits.size() > 18 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        (digits.size() > 1 && digits[0] == '0') || !absl::SimpleAtoi(std::string(digits), &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("no such record in the demo database: ", std::string(key)));
    }
    statement = profile_;
    sqlite3_bind_int64(statement, 1, id);
  }
  if (count && counters_ != nullptr) {
    counters_->queries.fetch_add(1, std::memory_order_relaxed);
    if (absl::ToUnixMillis(absl::Now()) >= outage_at_ms_) {
      counters_->outage_queries.fetch_add(1, std::memory_order_relaxed);
    }
  }
  absl::StatusOr<std::string> record = RunOneText(statement, key);
  if (count && added_latency_ > absl::ZeroDuration()) absl::SleepFor(added_latency_);
  return record;
}

absl::StatusOr<std::string> Database::RunOneText(sqlite3_stmt* statement, std::string_view key) {
  const int rc = sqlite3_step(statement);
  absl::StatusOr<std::string> result;
  const unsigned char* text = rc == SQLITE_ROW && sqlite3_column_type(statement, 0) == SQLITE_TEXT
                                  ? sqlite3_column_text(statement, 0)
                                  : nullptr;
  if (text != nullptr) {
    result = std::string(reinterpret_cast<const char*>(text),
                         static_cast<size_t>(sqlite3_column_bytes(statement, 0)));
  } else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
    result =
        absl::NotFoundError(absl::StrCat("no record in the demo database for ", std::string(key)));
  } else {
    result = SqliteError(db_, absl::StrCat("query for ", std::string(key)));
  }
  sqlite3_reset(statement);
  sqlite3_clear_bindings(statement);
  return result;
}

absl::StatusOr<LoadCost> MeasureLoad(const std::string& path, const DatasetShape& shape,
                                     int samples) {
  if (samples < 1 || samples > shape.users) {
    return absl::InvalidArgumentError(
        absl::StrFormat("MeasureLoad: %d samples from %d users", samples, shape.users));
  }
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path, shape);
  if (!db.ok()) return db.status();
  std::vector<std::string> keys;
  for (int i = 0; i < samples; ++i) keys.push_back(UserKey(i * shape.users / samples));
  using Clock = std::chrono::steady_clock;
  std::vector<double> ms;
  LoadCost cost;
  for (int pass = 0; pass < 2; ++pass) {  // the first pass reads the pages in
    for (const std::string& key : keys) {
      const Clock::time_point start = Clock::now();
      absl::StatusOr<std::string> record = (*db)->Fetch(key, /*count=*/false);
      const double took = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      if (!record.ok()) return record.status();
      if (pass == 1) {
        ms.push_back(took);
        cost.profile_bytes += record->size();
      }
    }
  }
  std::sort(ms.begin(), ms.end());
  cost.p50_ms = ms[ms.size() / 2];
  cost.p99_ms = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  double sum = 0;
  for (double v : ms) sum += v;
  cost.mean_ms = sum / static_cast<double>(ms.size());
  cost.profile_bytes /= ms.size();
  for (int pass = 0; pass < 2; ++pass) {  // the first pass reads the pages in
    const Clock::time_point start = Clock::now();
    absl::StatusOr<std::string> report = (*db)->Fetch(kTopSpendersKey, /*count=*/false);
    if (!report.ok()) return report.status();
    cost.report_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  }
  return cost;
}

std::string SqliteVersion() { return absl::StrCat("SQLite ", sqlite3_libversion()); }

}  // namespace tiercache_demo
