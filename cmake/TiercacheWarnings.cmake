# tiercache_set_warnings(target): the warning set every tiercache target builds
# with; errors when TIERCACHE_WERROR is on (CI turns it on).
function(tiercache_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow
                         -Wnon-virtual-dtor -Wconversion -Wno-sign-conversion)
  # clang checks the lock annotations (ABSL_GUARDED_BY, ...Locked helpers'
  # ABSL_EXCLUSIVE_LOCKS_REQUIRED); .ci/run builds the libraries with clang.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    target_compile_options(${target} PRIVATE -Wthread-safety)
  endif()
  if(TIERCACHE_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

if(TIERCACHE_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
elseif(TIERCACHE_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT TIERCACHE_SANITIZE STREQUAL "")
  message(FATAL_ERROR "TIERCACHE_SANITIZE must be address, thread or empty, not '${TIERCACHE_SANITIZE}'")
endif()
