package api

import "encoding/json"

// TopicOutputClientData carries account data changes.
//
// Producer: userapi, after the change is stored (NOTSPEC-free internal topic; DESIGN.md
// lists clientapi as its owner, but the userapi stores account data, so it produces it).
// Key: user ID; per-user order. Payload: OutputClientData, version 1, with the content
// inline (account data is small). Consumers upsert: replays change nothing.
const TopicOutputClientData = "OutputClientData"

// OutputClientDataTypeAccountData is the envelope type of an account data change.
const OutputClientDataTypeAccountData = "account_data"

// OutputClientData is the envelope of TopicOutputClientData.
type OutputClientData struct {
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
