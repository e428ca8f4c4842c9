package internal

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/syncapi/storage"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Erasure serves the events of erased accounts (POST /account/deactivate with erase: true)
// redacted to the users who were not joined to the room when they were sent. Members who
// were joined then keep seeing them whole. The spec promises whole copies to everyone who
// "had visibility on those events prior to the erasure"; this server, like Synapse and
// sytest's "Only original members of the room can see messages from erased users",
// keeps them only for those joined when the event was sent, and redacts them for a user
// who joined later and saw them through shared history (NOTSPEC:
// https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3accountdeactivate).
type Erasure struct {
	// API tells which users are erased (the userapi).
	API uapi.ErasureAPI
	// ServerName is this server's: only its own users can have been erased here.
	ServerName string
}

// applies reports whether e, if its sender is erased, reaches v redacted: its sender is
// another local user and v was not joined to the room once e applied.
func (er *Erasure) applies(e *storage.Event, v *viewer) bool {
	return e.Sender != v.userID && strings.HasSuffix(e.Sender, ":"+er.ServerName) && v.history.at(e.Position) != spec.Join
}

// redactErased returns evs with the events of erased senders redacted (as a redaction
// would, without unsigned.redacted_because) where Erasure.applies; evs itself is left as
// it is. It asks the userapi only about the senders of such events, so a viewer reading
// what was sent while they were joined costs no call.
func (s *Syncer) redactErased(ctx context.Context, evs []storage.Event, v *viewer) ([]storage.Event, error) {
	er := s.erasure
	if er == nil {
		return evs, nil
	}
	var senders []string
	for i := range evs {
		if er.applies(&evs[i], v) && !slices.Contains(senders, evs[i].Sender) {
			senders = append(senders, evs[i].Sender)
		}
	}
	if len(senders) == 0 {
		return evs, nil
	}
	res, err := er.API.QueryErasedUsers(ctx, &uapi.QueryErasedUsersRequest{UserIDs: senders})
	if err != nil {
		return nil, fmt.Errorf("query erased users: %w", err)
	}
	if len(res.Erased) == 0 {
		return evs, nil
	}
	out := slices.Clone(evs)
	for i := range out {
		e := &out[i]
		if !slices.Contains(res.Erased, e.Sender) || !er.applies(e, v) || redacted(e.JSON) {
			continue
		}
		verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(e.RoomVersion))
		if err != nil {
			return nil, fmt.Errorf("room version of %s: %w", e.EventID, err)
		}
		if e.JSON, err = verImpl.RedactEventJSON(e.JSON); err != nil {
			return nil, fmt.Errorf("redact %s: %w", e.EventID, err)
		}
	}
	return out, nil
}

// redacted reports whether an event's JSON is already its redacted form, which keeps the
// unsigned.redacted_because that the syncapi stored with it.
func redacted(eventJSON []byte) bool {
	var ev struct {
		Unsigned struct {
			RedactedBecause json.RawMessage `json:"redacted_because"`
		} `json:"unsigned"`
	}
	return json.Unmarshal(eventJSON, &ev) == nil && len(ev.Unsigned.RedactedBecause) > 0
}
