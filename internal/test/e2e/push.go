package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// unreadCounts is a room's counts in /sync.
type unreadCounts struct {
	NotificationCount int `json:"notification_count"`
	HighlightCount    int `json:"highlight_count"`
}

// pushCounts are a joined room's counts in an initial /sync with unread_thread_notifications
// set in the timeline filter when threaded.
func pushCounts(t *testing.T, c *mautrix.Client, roomID id.RoomID, threaded bool) (unreadCounts, map[string]unreadCounts) {
	t.Helper()
	filter := fmt.Sprintf(`{"room":{"timeline":{"limit":1,"unread_thread_notifications":%t}}}`, threaded)
	var res struct {
		Rooms struct {
			Join map[string]struct {
				Unread  unreadCounts            `json:"unread_notifications"`
				Threads map[string]unreadCounts `json:"unread_thread_notifications"`
			} `json:"join"`
		} `json:"rooms"`
	}
	u := c.BuildClientURL("v3", "sync") + "?timeout=0&filter=" + url.QueryEscape(filter)
	if _, err := c.MakeRequest(context.Background(), "GET", u, nil, &res); err != nil {
		t.Fatalf("sync: %v", err)
	}
	jr := res.Rooms.Join[roomID.String()]
	return jr.Unread, jr.Threads
}

// waitCounts polls /sync until the room's counts are want (and, threaded, the thread's
// counts are wantThread).
func waitCounts(t *testing.T, c *mautrix.Client, roomID id.RoomID, want unreadCounts, thread string, wantThread unreadCounts) {
	t.Helper()
	var got unreadCounts
	var threads map[string]unreadCounts
	waitForSaying(t, func() string {
		return fmt.Sprintf("counts %+v, thread %s %+v; last seen %+v, threads %+v", want, thread, wantThread, got, threads)
	}, func() bool {
		got, threads = pushCounts(t, c, roomID, thread != "")
		return got == want && (thread == "" || threads[thread] == wantThread)
	})
}

// notificationsOf is GET /notifications with query.
func notificationsOf(t *testing.T, c *mautrix.Client, query string) []map[string]any {
	t.Helper()
	var res struct {
		Notifications []map[string]any `json:"notifications"`
	}
	if _, err := c.MakeRequest(context.Background(), "GET", c.BuildClientURL("v3", "notifications")+query, nil, &res); err != nil {
		t.Fatalf("GET /notifications: %v", err)
	}
	return res.Notifications
}

// PushCounts drives the push reader through a real client: a keyword rule, a mention and
// a one-to-one message notify with the right highlight; a disabled rule stops
// notifications; a thread reply counts in its thread; threaded and unthreaded receipts
// drop the counts in /sync; /notifications lists them with their read flags.
func PushCounts(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "pusha"), Register(t, baseURL, "pushb")
	room, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = alice.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	rule := map[string]any{"pattern": "pineapple", "actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}}
	if _, err = alice.MakeRequest(ctx, "PUT", alice.BuildClientURL("v3", "pushrules", "global", "content", "fruit"), rule, nil); err != nil {
		t.Fatalf("put keyword rule: %v", err)
	}
	send := func(content map[string]any) id.EventID {
		t.Helper()
		res, err := bob.SendMessageEvent(ctx, room.RoomID, event.EventMessage, content)
		if err != nil {
			t.Fatal(err)
		}
		return res.EventID
	}
	text := func(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }
	send(text("hello"))
	send(text("I like Pineapple."))
	mention := text("alice, look")
	mention["m.mentions"] = map[string]any{"user_ids": []string{alice.UserID.String()}}
	send(mention)
	waitCounts(t, alice, room.RoomID, unreadCounts{3, 2}, "", unreadCounts{})

	// Plain messages stop notifying once the rules that match them are disabled: the
	// plain message after it does not count, the mention after it (the marker) does.
	off := map[string]any{"enabled": false}
	for _, ruleID := range []string{".m.rule.room_one_to_one", ".m.rule.message"} {
		if _, err = alice.MakeRequest(ctx, "PUT", alice.BuildClientURL("v3", "pushrules", "global", "underride", ruleID, "enabled"), off, nil); err != nil {
			t.Fatalf("disable %s: %v", ruleID, err)
		}
	}
	send(text("quiet now"))
	last := send(mention)
	waitCounts(t, alice, room.RoomID, unreadCounts{4, 3}, "", unreadCounts{})

	reply := text("pineapple in a thread")
	reply["m.relates_to"] = map[string]any{"rel_type": "m.thread", "event_id": last.String()}
	inThread := send(reply)
	waitCounts(t, alice, room.RoomID, unreadCounts{4, 3}, last.String(), unreadCounts{1, 1})
	if all, _ := pushCounts(t, alice, room.RoomID, false); all != (unreadCounts{5, 4}) {
		t.Fatalf("unthreaded counts with a thread reply: %+v", all)
	}
	if got := notificationsOf(t, alice, ""); len(got) != 5 || got[0]["read"] != false {
		t.Fatalf("notifications: %v", got)
	}
	if got := notificationsOf(t, alice, "?only=highlight&limit=2"); len(got) != 2 {
		t.Fatalf("highlights, limit 2: %v", got)
	} else if ev, _ := got[0]["event"].(map[string]any); ev["event_id"] != inThread.String() {
		t.Fatalf("newest highlight is %v, want %s", ev["event_id"], inThread)
	}

	// A threaded receipt reads the thread only; an unthreaded one reads everything.
	if err = alice.SendReceipt(ctx, room.RoomID, inThread, event.ReceiptTypeRead, mautrix.ReqSendReceipt{ThreadID: last.String()}); err != nil {
		t.Fatal(err)
	}
	waitCounts(t, alice, room.RoomID, unreadCounts{4, 3}, last.String(), unreadCounts{})
	if err = alice.SendReceipt(ctx, room.RoomID, last, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	waitCounts(t, alice, room.RoomID, unreadCounts{}, "", unreadCounts{})
	for _, n := range notificationsOf(t, alice, "") {
		if n["read"] != true {
			b, _ := json.Marshal(n)
			t.Fatalf("notification not read after the receipt: %s", b)
		}
	}
}
