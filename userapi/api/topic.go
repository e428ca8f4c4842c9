package api

import "encoding/json"

// TopicOutputClientData carries account data changes.
//
// Producer: userapi, from its outbox: the record is stored in the transaction that stores
// the change (DESIGN.md lists clientapi as its owner, but the userapi stores account data,
// so it produces it). Key: user ID; per-user order. Payload: OutputClientData, version 1,
// with the content inline (account data is small). Delivery is at least once.
//
// Every record carries Seq, its number in its partition (dense from 1, assigned in the
// transaction that stores the change). The log is not the source of truth: readers apply
// it with OutputSequence, which skips records at or below the last Seq they applied and
// fetches what a gap or a wiped log lost from QueryOutputRecords; the userapi keeps the
// records for user_api.output_replay_window. Consumers upsert.
const TopicOutputClientData = "OutputClientData"

// OutputClientDataTypeAccountData is the envelope type of an account data change.
const OutputClientDataTypeAccountData = "account_data"

// OutputClientData is the envelope of TopicOutputClientData.
type OutputClientData struct {
	// Seq is the record's number in its partition (see TopicOutputClientData); 0 on
	// records written before numbers existed.
	Seq         int64              `json:"seq,omitempty"`
	Type        string             `json:"type"`
	AccountData *AccountDataChange `json:"account_data,omitempty"`
}

// AccountDataChange is one stored piece of account data.
type AccountDataChange struct {
	UserID  string          `json:"user_id"`
	RoomID  string          `json:"room_id,omitempty"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// TopicOutputKeyChangeEvent carries changes of local users' device keys (a device's keys
// uploaded or replaced, a device deleted) and cross-signing keys (keys uploaded,
// signatures made).
//
// Producer: userapi, from its outbox, like TopicOutputClientData: the record is stored in
// the transaction that stores the change. Key: user ID (notify_only's when set); per-user
// order, and each message carries that user's device-list stream ID, which only grows.
// Payload: OutputKeyChangeEvent, version 1, type device_keys or cross_signing.
// Consumers: the syncapi records that the user's device list changed (device_lists.changed
// for everyone sharing a room with them, and /keys/changes), skipping a stream ID it
// already holds, so replays change nothing. The federationsender sends our users' changes
// to other servers as m.device_list_update and m.signing_key_update. A cross-signing
// change with notify_only concerns that one local user alone (see CrossSigningKeyChange).
// The userapi also writes changes of other servers' users (from InputDeviceListUpdate)
// here, at a stream it keeps per remote user, for the syncapi.
//
// Every record carries Seq, its number in its partition, as TopicOutputClientData's do:
// readers apply it with OutputSequence and recover what a gap or a wiped log lost from
// QueryOutputRecords.
const TopicOutputKeyChangeEvent = "OutputKeyChangeEvent"

// OutputKeyChangeTypeDeviceKeys is the envelope type of a device key change.
const OutputKeyChangeTypeDeviceKeys = "device_keys"

// OutputKeyChangeTypeCrossSigning is the envelope type of a change of a user's
// cross-signing keys or of the signatures they made.
const OutputKeyChangeTypeCrossSigning = "cross_signing"

// OutputKeyChangeEvent is the envelope of TopicOutputKeyChangeEvent.
type OutputKeyChangeEvent struct {
	// Seq is the record's number in its partition (see TopicOutputKeyChangeEvent); 0 on
	// records written before numbers existed.
	Seq          int64                  `json:"seq,omitempty"`
	Type         string                 `json:"type"`
	DeviceKeys   *DeviceKeyChange       `json:"device_keys,omitempty"`
	CrossSigning *CrossSigningKeyChange `json:"cross_signing,omitempty"`
}

// CrossSigningKeyChange is a user's master and self-signing keys after a change (what
// m.signing_key_update carries).
type CrossSigningKeyChange struct {
	UserID         string          `json:"user_id"`
	StreamID       int64           `json:"stream_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
	// NotifyOnly, when set, is the one local user this change concerns: the owner of a new
	// user-signing key (which only they see), or the signer of UserID's master key (whose
	// signature only they see). Then StreamID is NotifyOnly's stream; the syncapi tells
	// only NotifyOnly that UserID changed, and the federationsender sends nothing.
	NotifyOnly string `json:"notify_only,omitempty"`
}

// DeviceKeyChange is one device's keys after a change: Keys is the signed device key JSON,
// absent when Deleted.
type DeviceKeyChange struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id"`
	// StreamID is the user's device-list stream position after this change (what
	// m.device_list_update calls stream_id).
	StreamID    int64           `json:"stream_id"`
	DisplayName string          `json:"display_name,omitempty"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}
