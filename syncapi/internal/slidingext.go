package internal

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/types"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// extensions fills in the enabled extensions.
func (b *slidingBuild) extensions(ctx context.Context, res *types.SlidingResponse) error {
	ext := &b.req.Body.Ext
	if ext.ToDevice != nil && ext.ToDevice.On() {
		if err := b.toDevice(ctx, ext.ToDevice, res); err != nil {
			return err
		}
	}
	if ext.E2EE.On() {
		if err := b.e2ee(ctx, res); err != nil {
			return err
		}
	}
	if ext.AccountData != nil && ext.AccountData.On() {
		b.accountDataExt(b.scoped(ext.AccountData, false), res)
	}
	if ext.Typing != nil && ext.Typing.On() {
		if err := b.typing(ctx, b.scoped(ext.Typing, true), res); err != nil {
			return err
		}
	}
	if ext.Receipts != nil && ext.Receipts.On() {
		if err := b.receipts(ctx, b.scoped(ext.Receipts, true), res); err != nil {
			return err
		}
	}
	return nil
}

// scoped are the rooms an extension covers: those in the ranges of the lists it names and
// the subscribed rooms it names ("*", or an absent field, names all); only joined rooms
// when joinedOnly.
func (b *slidingBuild) scoped(ext *types.ScopedExtension, joinedOnly bool) []string {
	lists, rooms := ext.Lists, ext.Rooms
	if lists == nil {
		lists = []string{"*"}
	}
	if rooms == nil {
		rooms = []string{"*"}
	}
	set := map[string]bool{}
	for _, l := range lists {
		for name, ids := range b.listRooms {
			if l == "*" || l == name {
				for _, id := range ids {
					set[id] = true
				}
			}
		}
	}
	for _, r := range rooms {
		for _, id := range b.subscribed {
			if r == "*" || r == id {
				set[id] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for id := range set {
		if !joinedOnly || b.candidateFor(id).membership == spec.Join {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// toDevice is the to_device extension: the device's unacknowledged messages, up to the
// limit; next_batch is the position of the last one given (the request's since
// acknowledges up to it).
func (b *slidingBuild) toDevice(ctx context.Context, ext *types.ToDeviceExtension, res *types.SlidingResponse) error {
	out := &types.SlidingToDevice{NextBatch: strconv.FormatInt(b.to, 10), Events: []types.ToDeviceEvent{}}
	res.Extensions.ToDevice = out
	if b.since > 0 && !b.s.notifier.Changed(storage.StreamToDevice, ext.SincePos) {
		return nil
	}
	msgs, err := b.s.db.ToDevice(ctx, b.req.UserID, b.req.DeviceID, b.to)
	if err != nil {
		return fmt.Errorf("load to-device messages: %w", err)
	}
	limit := ext.ToDeviceLimit()
	if len(msgs) > limit {
		msgs = msgs[:limit]
		out.NextBatch = strconv.FormatInt(msgs[limit-1].Position, 10)
	}
	for _, m := range msgs {
		out.Events = append(out.Events, types.ToDeviceEvent{Type: m.Type, Sender: m.Sender, Content: m.Content})
	}
	return nil
}

// e2ee is the e2ee extension: device list changes since the connection's last response,
// and the device's one-time key counts and unused fallback key types.
func (b *slidingBuild) e2ee(ctx context.Context, res *types.SlidingResponse) error {
	out := &types.SlidingE2EE{DeviceOneTimeKeysCount: map[string]int{}, DeviceUnusedFallbackKeyTypes: []string{}}
	res.Extensions.E2EE = out
	if b.since > 0 && (b.s.notifier.Changed(storage.StreamKeyChanges, b.since) || b.s.notifier.Changed(storage.StreamRoomEvents, b.since)) {
		dl, err := b.s.deviceLists(ctx, b.req.UserID, b.since, b.to)
		if err != nil {
			return err
		}
		out.DeviceLists = &dl
	}
	if b.s.keys == nil {
		return nil
	}
	counts, err := b.s.keys.QueryOneTimeKeyCounts(ctx, &uapi.QueryOneTimeKeyCountsRequest{UserID: b.req.UserID, DeviceID: b.req.DeviceID})
	if err != nil {
		return fmt.Errorf("count one-time keys: %w", err)
	}
	if counts.OneTimeKeyCounts != nil {
		out.DeviceOneTimeKeysCount = counts.OneTimeKeyCounts
	}
	if counts.UnusedFallbackKeyAlgorithms != nil {
		out.DeviceUnusedFallbackKeyTypes = counts.UnusedFallbackKeyAlgorithms
	}
	return nil
}

// accountDataExt is the account_data extension: global account data changed since the
// connection's last response, and that of the covered rooms (all of it for a room sent
// whole in this response).
func (b *slidingBuild) accountDataExt(rooms []string, res *types.SlidingResponse) {
	out := &types.SlidingAccountData{Global: []types.BasicEvent{}, Rooms: map[string][]types.BasicEvent{}}
	res.Extensions.AccountData = out
	covered := make(map[string]bool, len(rooms))
	for _, id := range rooms {
		covered[id] = true
	}
	for _, ad := range b.accountData {
		ev := types.BasicEvent{Type: ad.Type, Content: ad.Content}
		switch {
		case ad.RoomID == "" && ad.Position > b.since:
			out.Global = append(out.Global, ev)
		case ad.RoomID != "" && covered[ad.RoomID] && (ad.Position > b.since || b.initial[ad.RoomID]):
			out.Rooms[ad.RoomID] = append(out.Rooms[ad.RoomID], ev)
		}
	}
}

// typing is the typing extension: the typing sets of the covered rooms changed since the
// connection's last response (every non-empty one on its first).
func (b *slidingBuild) typing(ctx context.Context, rooms []string, res *types.SlidingResponse) error {
	out := &types.SlidingEphemeral{Rooms: map[string]json.RawMessage{}}
	res.Extensions.Typing = out
	if len(rooms) == 0 || b.since > 0 && !b.s.notifier.Changed(storage.StreamTyping, b.since) {
		return nil
	}
	typing, err := b.s.db.Typing(ctx, rooms, b.since, b.to)
	if err != nil {
		return fmt.Errorf("load typing: %w", err)
	}
	now := time.Now().UnixMilli()
	for _, t := range typing {
		users := []string{}
		for _, u := range t.Users {
			if u.ExpiresTS > now {
				users = append(users, u.UserID)
			}
		}
		if len(users) == 0 && b.since == 0 {
			continue
		}
		raw, err := json.Marshal(typingEvent{Type: "m.typing", Content: typingContent{UserIDs: users}})
		if err != nil {
			return err
		}
		out.Rooms[t.RoomID] = raw
	}
	return nil
}

// receipts is the receipts extension: the receipts in the covered rooms changed since the
// connection's last response (private ones only the user's own).
func (b *slidingBuild) receipts(ctx context.Context, rooms []string, res *types.SlidingResponse) error {
	out := &types.SlidingEphemeral{Rooms: map[string]json.RawMessage{}}
	res.Extensions.Receipts = out
	if len(rooms) == 0 || b.since > 0 && !b.s.notifier.Changed(storage.StreamReceipts, b.since) {
		return nil
	}
	receipts, err := b.s.db.Receipts(ctx, b.req.UserID, rooms, b.since, b.to)
	if err != nil {
		return fmt.Errorf("load receipts: %w", err)
	}
	byRoom := map[string]receiptContent{}
	for _, r := range receipts {
		c := byRoom[r.RoomID]
		if c == nil {
			c = receiptContent{}
			byRoom[r.RoomID] = c
		}
		if c[r.EventID] == nil {
			c[r.EventID] = map[string]map[string]receiptInfo{}
		}
		if c[r.EventID][r.Type] == nil {
			c[r.EventID][r.Type] = map[string]receiptInfo{}
		}
		c[r.EventID][r.Type][r.UserID] = receiptInfo{TS: r.TS, ThreadID: r.ThreadID}
	}
	for roomID, c := range byRoom {
		raw, err := json.Marshal(receiptEvent{Type: "m.receipt", Content: c})
		if err != nil {
			return err
		}
		out.Rooms[roomID] = raw
	}
	return nil
}
