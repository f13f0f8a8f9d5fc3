// gmock matchers for absl::StatusOr, shared by the test files (abseil's own
// status matchers are not in Debian's libabsl-dev).

#ifndef TIERCACHE_TESTS_STATUS_MATCHERS_H_
#define TIERCACHE_TESTS_STATUS_MATCHERS_H_

#include "gmock/gmock.h"

namespace tiercache::testing {

// EXPECT_THAT(status_or, IsOkAndHolds(matcher)): OK, and the value matches.
MATCHER_P(IsOkAndHolds, matcher, "") {
  if (!arg.ok()) {
    *result_listener << "status is " << arg.status();
    return false;
  }
  return ::testing::ExplainMatchResult(matcher, *arg, result_listener);
}

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_STATUS_MATCHERS_H_
