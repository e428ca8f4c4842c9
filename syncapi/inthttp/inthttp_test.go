package inthttp_test

import (
	"reflect"
	"slices"
	"testing"

	"github.com/gorilla/mux"

	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/syncapi/api"
	"github.com/matrix-org/dendrite/syncapi/inthttp"
)

// TestEveryMethodServed fails when a method is added to api.PeekAPI and not to Register.
// The methods' round trip over internal HTTP is in the sync API's TestPeekEnds.
func TestEveryMethodServed(t *testing.T) {
	srv := inthttp.Register(mux.NewRouter(), (*inthttp.Client)(nil), ihttp.ServerOptions{})
	want, err := ihttp.Methods(reflect.TypeFor[api.PeekAPI]())
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Methods(); !slices.Equal(got, want) {
		t.Fatalf("served %v, api.PeekAPI has %v", got, want)
	}
}
