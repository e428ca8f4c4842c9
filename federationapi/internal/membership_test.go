package internal

import (
	"errors"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrix"
)

// TestInviteFailure: what the inviter's client is told when the invitee's server does not
// sign an invite. Its refusal stays a refusal (keeping M_INVITE_BLOCKED, which the spec
// has createRoom and /invite pass on), an unknown invitee is 404, an unsupported room
// version the spec's 400, and anything else (unreachable, a 5xx) 502.
func TestInviteFailure(t *testing.T) {
	httpErr := func(code int, body string) error {
		return fmt.Errorf("send invite: %w", gomatrix.HTTPError{Code: code, Contents: []byte(body)})
	}
	for _, c := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"refused", httpErr(403, `{"errcode":"M_FORBIDDEN","error":"no"}`), 403, "M_FORBIDDEN"},
		{"blocked", httpErr(403, `{"errcode":"M_INVITE_BLOCKED","error":"blocked"}`), 403, "M_INVITE_BLOCKED"},
		{"refused without a Matrix body", httpErr(403, `<html>`), 403, "M_FORBIDDEN"},
		{"unknown user", httpErr(404, `{"errcode":"M_NOT_FOUND","error":"unknown user"}`), 404, "M_NOT_FOUND"},
		{"room version", httpErr(400, `{"errcode":"M_INCOMPATIBLE_ROOM_VERSION","room_version":"12"}`), 400, "M_UNSUPPORTED_ROOM_VERSION"},
		{"other 4xx", httpErr(400, `{"errcode":"M_BAD_JSON"}`), 502, "M_UNKNOWN"},
		{"server error", httpErr(500, `{}`), 502, "M_UNKNOWN"},
		{"unreachable", errors.New("dial tcp 127.0.0.1:1: connection refused"), 502, "M_UNKNOWN"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := inviteFailure(c.err, "@bob:other.example")
			if got.Status != c.status || got.Code != c.code {
				t.Fatalf("want %d %s, got %d %s (%s)", c.status, c.code, got.Status, got.Code, got.Message)
			}
		})
	}
}
