// Package pushserver is the push reader (DESIGN.md 2, 13): it keeps the pushers clients
// register for push gateways and serves /pushers. See api/.
package pushserver

import (
	"context"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/pushserver/routing"
	"github.com/matrix-org/dendrite/pushserver/storage/sql"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Deps is what the push server is built from.
type Deps struct {
	Cfg          *config.PushServer
	DB           *sqlutil.DB
	DeviceLookup func(ctx context.Context, token string) (*uapi.Device, error)
	Logger       *logrus.Entry
}

// PushServer is a built push server.
type PushServer struct {
	handlers *routing.Handlers
}

// New opens the storage.
func New(ctx context.Context, d Deps) (*PushServer, error) {
	db, err := sql.Open(ctx, d.DB)
	if err != nil {
		return nil, err
	}
	return &PushServer{handlers: &routing.Handlers{DB: db, DeviceLookup: d.DeviceLookup}}, nil
}

// Routes are the push server's client routes.
func (s *PushServer) Routes() []httputil.Route {
	return s.handlers.Routes()
}
