package setup

import "strings"

// NormaliseFlags turns --flag into -flag, so that every command line accepts both GNU-style
// double dashes and Go's single dash, also for flags after positional arguments.
func NormaliseFlags(args []string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		if strings.HasPrefix(a, "--") {
			a = a[1:]
		}
		out = append(out, a)
	}
	return out
}
