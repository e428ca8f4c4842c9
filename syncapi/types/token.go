// Package types holds the sync API's wire formats: stream tokens, filters, the client event
// format and the bodies of /sync, /messages and /context.
package types

import (
	"strconv"
	"strings"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// StreamToken is a point in the sync API's one stream of positions: it stands after every
// event with a position at or below Position. It is written "s<position>"; positions of
// backfilled history are negative ("s-12"). Later streams
// (typing, receipts, ...) will append "_<part>" fields: parsing reads the first part and
// ignores the rest, so tokens stay valid across that change.
type StreamToken struct {
	Position int64
}

// HistoryStart is a position below every stored event, backfilled ones included: where a
// forward walk through a whole room starts.
const HistoryStart int64 = -1 << 62

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
	neg := false
	if ok {
		// Backfilled history has negative positions (see syncapi/storage).
		digits, neg = strings.CutPrefix(digits, "-")
	}
	if !ok || digits == "" || len(digits) > 19 {
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
	if neg {
		pos = -pos
	}
	return StreamToken{Position: pos}, nil
}
