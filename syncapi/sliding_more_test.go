package syncapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// deleteDevice produces the key change the userapi writes when it deletes a device.
func (h *harness) deleteDevice(userID, deviceID string, streamID int64) {
	h.t.Helper()
	b, _ := json.Marshal(uapi.OutputKeyChangeEvent{Type: uapi.OutputKeyChangeTypeDeviceKeys, // plain structs always encode
		DeviceKeys: &uapi.DeviceKeyChange{UserID: userID, DeviceID: deviceID, StreamID: streamID, Deleted: true}})
	if _, err := h.log.Produce(context.Background(), keyTopic, eventlog.Message{Key: []byte(userID), Value: b}); err != nil {
		h.t.Fatal(err)
	}
	h.waitConsumed()
}

// TestSlidingDeletedDeviceForgotten: deleting a device forgets its sliding sync
// connections (their pos answers M_UNKNOWN_POS); deleting another device of the same user
// leaves them alone.
func TestSlidingDeletedDeviceForgotten(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		h.newRoom(alice)
		h.waitConsumed()
		list := map[string]slidingList{"all": {Range: []int{0, 9}, TimelineLimit: 1}}
		pos := h.sliding(alice, slidingReq{ConnID: "main", Lists: list}).Pos

		h.deleteDevice(alice, "OTHERDEVICE", 1)
		pos = h.sliding(alice, slidingReq{ConnID: "main", Pos: pos, Lists: list}).Pos

		h.deleteDevice(alice, "DEValice", 2)
		h.wantSlidingError(alice, slidingReq{ConnID: "main", Pos: pos, Lists: list}, http.StatusBadRequest, "M_UNKNOWN_POS")
	})
}
