package types

import (
	"encoding/json"
	"testing"
)

// TestDeviceListsJSON: /sync leaves out empty device_lists fields (sytest's device-list tests
// take an absent "changed" for "not yet" and sync again, a present empty one for failure),
// while GET /keys/changes always carries both lists.
func TestDeviceListsJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"sync, nothing changed", NewSyncResponse().DeviceLists, `{}`},
		{"sync, changed only", DeviceLists{Changed: []string{"@a:x"}}, `{"changed":["@a:x"]}`},
		{"keys/changes, nothing changed", DeviceLists{}.MarshalKeyChanges(), `{"changed":[],"left":[]}`},
		{"keys/changes, left only", DeviceLists{Left: []string{"@a:x"}}.MarshalKeyChanges(), `{"changed":[],"left":["@a:x"]}`},
	} {
		b, err := json.Marshal(tc.v)
		if err != nil || string(b) != tc.want {
			t.Errorf("%s: %s %v, want %s", tc.name, b, err, tc.want)
		}
	}
}
