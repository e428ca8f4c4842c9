package federationapi_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/matrix-org/dendrite/federationapi/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// TestQueryRemoteProfile: B asks A for its user's profile over /query/profile (sytest
// "Outbound federation can query profile data" through GET /profile), answers a repeated
// question from its cache, and tells unknown, local and invalid users apart.
func TestQueryRemoteProfile(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		ctx := context.Background()
		alice := fmt.Sprintf("@alice:%s", a.name)
		if _, err := a.users.PerformAccountCreation(ctx, &uapi.PerformAccountCreationRequest{Localpart: "alice", Password: "pw-alice-123", AccountType: uapi.AccountTypeUser}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.users.PerformSetDisplayName(ctx, &uapi.PerformSetDisplayNameRequest{Localpart: "alice", DisplayName: "Alice"}); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			p, err := b.fed.API().QueryRemoteProfile(ctx, &api.QueryRemoteProfileRequest{UserID: alice})
			if err != nil || p.DisplayName != "Alice" {
				t.Fatalf("remote profile: %+v %v", p, err)
			}
		}
		if n := a.served("/_matrix/federation/v1/query/profile"); n != 1 {
			t.Fatalf("A was asked %d times, want once (then the cache)", n)
		}
		_, err := b.fed.API().QueryRemoteProfile(ctx, &api.QueryRemoteProfileRequest{UserID: fmt.Sprintf("@nobody:%s", a.name)})
		wantMatrixErr(t, err, http.StatusNotFound, "M_NOT_FOUND")
		_, err = b.fed.API().QueryRemoteProfile(ctx, &api.QueryRemoteProfileRequest{UserID: fmt.Sprintf("@bob:%s", b.name)})
		wantMatrixErr(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
		_, err = b.fed.API().QueryRemoteProfile(ctx, &api.QueryRemoteProfileRequest{UserID: "not a user"})
		wantMatrixErr(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}
