# cmake -DREADME=... -DEXAMPLE=... -P check_readme.cmake
# Fails unless README.md contains, verbatim, the lines of EXAMPLE between
# "// readme-begin" and "// readme-end".
file(READ "${EXAMPLE}" example)
string(FIND "${example}" "// readme-begin\n" begin)
string(FIND "${example}" "// readme-end" end)
if(begin EQUAL -1 OR end EQUAL -1)
  message(FATAL_ERROR "${EXAMPLE} has no // readme-begin ... // readme-end markers")
endif()
math(EXPR begin "${begin} + 16")
math(EXPR length "${end} - ${begin}")
string(SUBSTRING "${example}" ${begin} ${length} snippet)
file(READ "${README}" readme)
string(FIND "${readme}" "${snippet}" found)
if(found EQUAL -1)
  message(FATAL_ERROR "README.md does not show the code of ${EXAMPLE} verbatim; "
                      "copy the lines between its readme markers into README.md")
endif()
