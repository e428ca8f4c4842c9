package inthttp_test

import (
	"reflect"
	"slices"
	"testing"

	"github.com/gorilla/mux"

	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/presenceserver/api"
	"github.com/matrix-org/dendrite/presenceserver/inthttp"
)

// TestEveryMethodServed fails when a method is added to api.ServerAPI and not to Register.
func TestEveryMethodServed(t *testing.T) {
	srv := inthttp.Register(mux.NewRouter(), (*inthttp.Client)(nil), ihttp.ServerOptions{})
	want, err := ihttp.Methods(reflect.TypeFor[api.ServerAPI]())
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Methods(); !slices.Equal(got, want) {
		t.Fatalf("served %v, api.ServerAPI has %v", got, want)
	}
}
