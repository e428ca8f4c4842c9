package federationsender_test

import (
	"encoding/json"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// TestKeyChangeEDUs: our users' device changes reach the servers sharing a room with them as
// m.device_list_update (prev_id the stream ID before), their master and self-signing keys as
// m.signing_key_update; a change only one local user may know of (notify_only: a
// user-signing key, a signature on another user's key) is not sent.
func TestKeyChangeEDUs(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ts := newThreeServers(t)
		log := test.EmbeddedLog(t, 1) // one partition: records are sent in the order written
		newSender(t, ts.a, db, log, ts.rooms, testSenderConfig())
		a, b := ts.a.user("a"), ts.b.user("b")
		for _, ev := range []uapi.OutputKeyChangeEvent{
			{Type: uapi.OutputKeyChangeTypeDeviceKeys, DeviceKeys: &uapi.DeviceKeyChange{UserID: a, DeviceID: "NEW", StreamID: 3, DisplayName: "phone"}},
			{Type: uapi.OutputKeyChangeTypeCrossSigning, CrossSigning: &uapi.CrossSigningKeyChange{UserID: a, StreamID: 4, NotifyOnly: a}},
			{Type: uapi.OutputKeyChangeTypeCrossSigning, CrossSigning: &uapi.CrossSigningKeyChange{UserID: b, StreamID: 5, NotifyOnly: a}},
			{Type: uapi.OutputKeyChangeTypeCrossSigning, CrossSigning: &uapi.CrossSigningKeyChange{UserID: a, StreamID: 6,
				MasterKey: json.RawMessage(`{"marker":true}`)}},
		} {
			produceJSON(t, log, uapi.TopicOutputKeyChangeEvent, a, ev)
		}
		edus := ts.b.waitEDUs(eventually, func(edus []gomatrixserverlib.EDU) bool { return hasEDU(edus, "m.signing_key_update", "marker") })
		var got []string
		for _, e := range edus {
			if e.Type == "m.device_list_update" || e.Type == "m.signing_key_update" {
				got = append(got, e.Type+" "+string(e.Content))
			}
		}
		want := []string{
			`m.device_list_update {"device_display_name":"phone","device_id":"NEW","prev_id":[2],"stream_id":3,"user_id":"` + a + `"}`,
			`m.signing_key_update {"master_key":{"marker":true},"user_id":"` + a + `"}`,
		}
		if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
			t.Fatalf("key EDUs at B\n%q\nwant\n%q", got, want)
		}
	})
}
