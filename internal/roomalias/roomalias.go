// Package roomalias parses room aliases (#localpart:server, spec appendix "Room aliases"):
// the localpart is any non-empty text without ':' or NUL, the server a valid server name,
// and the whole at most 255 bytes.
package roomalias

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// MaxLength is the spec's limit on a room alias, in bytes.
const MaxLength = 255

// Alias is a parsed room alias.
type Alias struct {
	Localpart string
	Server    spec.ServerName
}

// String is the alias as clients write it.
func (a Alias) String() string {
	return "#" + a.Localpart + ":" + string(a.Server)
}

// ErrInvalid is returned for text that is not a room alias.
var ErrInvalid = errors.New("invalid room alias")

// Parse checks s and splits it.
func Parse(s string) (Alias, error) {
	if len(s) > MaxLength || !strings.HasPrefix(s, "#") || !utf8.ValidString(s) {
		return Alias{}, ErrInvalid
	}
	local, server, ok := strings.Cut(s[1:], ":")
	if !ok || local == "" || strings.ContainsRune(local, 0) {
		return Alias{}, ErrInvalid
	}
	if _, _, valid := spec.ParseAndValidateServerName(spec.ServerName(server)); !valid {
		return Alias{}, ErrInvalid
	}
	return Alias{Localpart: local, Server: spec.ServerName(server)}, nil
}
