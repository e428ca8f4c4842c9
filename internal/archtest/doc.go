// Package archtest holds tests of the repository's architecture rules (STYLE.md 1 and 13):
// components import only each other's api packages, and every package is documented.
package archtest
