// Package guestaccess applies the spec's guest access rules to a room's local guests
// (client-server spec "Guest Access"): a guest may join only while the room's
// m.room.guest_access says can_join, and once it no longer does the server makes its
// guests leave, whether the change was sent here or arrived from another server.
package guestaccess

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"

	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// EventType is the state event that says whether guests may join.
const EventType = "m.room.guest_access"

// canJoin is the guest_access value that lets guests join.
const canJoin = "can_join"

// StateQuerier reads a room's current state (the roomserver).
type StateQuerier interface {
	QueryCurrentState(ctx context.Context, req *rsapi.QueryCurrentStateRequest) (*rsapi.QueryCurrentStateResponse, error)
}

// AccountQuerier looks a local account up (the userapi).
type AccountQuerier interface {
	QueryAccount(ctx context.Context, req *uapi.QueryAccountRequest) (*uapi.QueryAccountResponse, error)
}

// CanJoin reports whether the room's current m.room.guest_access is can_join; a room
// without one forbids guests.
func CanJoin(ctx context.Context, rs StateQuerier, roomID string) (bool, error) {
	res, err := rs.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID, Tuples: []rsapi.StateKeyTuple{{EventType: EventType}}})
	if err != nil {
		return false, fmt.Errorf("load guest access of %s: %w", roomID, err)
	}
	for _, ev := range res.StateEvents {
		var c struct {
			GuestAccess string `json:"guest_access"`
		}
		if json.Unmarshal(ev.Content(), &c) == nil && c.GuestAccess == canJoin {
			return true, nil
		}
	}
	return false, nil
}

// GuestsToRemove lists the guests of server joined to the room when its guest access does
// not say can_join (none when it does).
func GuestsToRemove(ctx context.Context, rs StateQuerier, accounts AccountQuerier, server spec.ServerName, roomID string) ([]string, error) {
	ok, err := CanJoin(ctx, rs, roomID)
	if err != nil || ok {
		return nil, err
	}
	res, err := rs.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID, Types: []string{spec.MRoomMember}})
	if err != nil {
		return nil, fmt.Errorf("load members of %s: %w", roomID, err)
	}
	var guests []string
	for _, ev := range res.StateEvents {
		target := ev.StateKey()
		if ev.Type() != spec.MRoomMember || target == nil {
			continue
		}
		uid, err := spec.NewUserID(*target, true)
		if err != nil || uid.Domain() != server {
			continue
		}
		if m, err := ev.Membership(); err != nil || m != spec.Join {
			continue
		}
		acc, err := accounts.QueryAccount(ctx, &uapi.QueryAccountRequest{Localpart: uid.Local()})
		if err != nil {
			return nil, fmt.Errorf("look up %s: %w", *target, err)
		}
		if acc.Account != nil && acc.Account.AccountType == uapi.AccountTypeGuest {
			guests = append(guests, *target)
		}
	}
	return guests, nil
}
