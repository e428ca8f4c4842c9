// Package types holds the sync API's wire formats: stream tokens, filters, the client event
// format and the bodies of /sync, /messages and /context.
package types

import (
	"strconv"
	"strings"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// StreamToken is a point in the sync API's one stream of positions: it stands after every
// event with a position at or below Position. It is written "s<position>". Later streams
// (typing, receipts, ...) will append "_<part>" fields: parsing reads the first part and
// ignores the rest, so tokens stay valid across that change.
type StreamToken struct {
	Position int64
}

// String is the token's wire form.
func (t StreamToken) String() string {
	return "s" + strconv.FormatInt(t.Position, 10)
}

// ParseStreamToken parses "s<position>" (optionally followed by "_..." parts). Anything else
// is a 400 M_INVALID_PARAM naming param.
func ParseStreamToken(param, s string) (StreamToken, error) {
	bad := matrixerr.InvalidParam(param + " is not a valid token")
	head, _, _ := strings.Cut(s, "_")
	digits, ok := strings.CutPrefix(head, "s")
	if !ok || digits == "" || len(digits) > 18 {
		return StreamToken{}, bad
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return StreamToken{}, bad
		}
	}
	pos, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return StreamToken{}, bad
	}
	return StreamToken{Position: pos}, nil
}
