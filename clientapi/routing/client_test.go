package routing_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// TestWithMatrixClient drives the account endpoints with a real Matrix client library,
// which parses every answer with the spec's types.
func TestWithMatrixClient(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		ctx := context.Background()
		c, err := mautrix.NewClient(e.url, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if v, err := c.Versions(ctx); err != nil || !v.ContainsGreaterOrEqual(mautrix.SpecV112) {
			t.Fatalf("versions %+v %v", v, err)
		}
		reg, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: "pw"})
		if err != nil {
			t.Fatal(err)
		}
		c.UserID, c.AccessToken, c.DeviceID = reg.UserID, reg.AccessToken, reg.DeviceID
		login, err := c.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "pw"})
		if err != nil || login.UserID != reg.UserID {
			t.Fatalf("login %+v %v", login, err)
		}
		if who, err := c.Whoami(ctx); err != nil || who.DeviceID != reg.DeviceID {
			t.Fatalf("whoami %+v %v", who, err)
		}
		if err = c.SetDisplayName(ctx, "Alice"); err != nil {
			t.Fatal(err)
		}
		if p, err := c.GetProfile(ctx, reg.UserID); err != nil || p.DisplayName != "Alice" {
			t.Fatalf("profile %+v %v", p, err)
		}
		if caps, err := c.Capabilities(ctx); err != nil || caps.RoomVersions == nil || caps.RoomVersions.Default != "10" {
			t.Fatalf("capabilities %+v %v", caps, err)
		}
		if rules, err := c.GetPushRules(ctx); err != nil || len(rules.Override) == 0 || len(rules.Underride) == 0 {
			t.Fatalf("push rules %+v %v", rules, err)
		}
		if f, err := c.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 5}}}); err != nil || f.FilterID == "" {
			t.Fatalf("filter %+v %v", f, err)
		}
		if err = c.SetAccountData(ctx, "org.example.test", map[string]int{"n": 1}); err != nil {
			t.Fatal(err)
		}
		var got map[string]int
		if err = c.GetAccountData(ctx, "org.example.test", &got); err != nil || got["n"] != 1 {
			t.Fatalf("account data %v %v", got, err)
		}
		if devs, err := c.GetDevicesInfo(ctx); err != nil || len(devs.Devices) != 2 {
			t.Fatalf("devices %+v %v", devs, err)
		}
		if _, err = c.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err = c.Whoami(ctx); err == nil {
			t.Fatal("whoami works after logout")
		}
	})
}
