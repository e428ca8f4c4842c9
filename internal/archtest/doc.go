// Package archtest holds tests of the repository's architecture rules (STYLE.md 1 and 13):
// components import only each other's api packages, every package is documented, and no large file
// (a built binary) is tracked.
package archtest
