package setup

import (
	"context"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/userapi"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// CreateAccount creates a local account directly in the userapi database (the
// create-account command).
func CreateAccount(ctx context.Context, cfg *config.Dendrite, localpart, password string) (string, error) {
	db, err := sqlutil.Open(cfg.DatabaseFor("userapi", cfg.UserAPI.Database))
	if err != nil {
		return "", fmt.Errorf("open userapi database: %w", err)
	}
	defer db.Close() // nolint: errcheck // read-write work is committed before Close
	ua, err := userapi.New(ctx, userapi.Deps{Cfg: &cfg.UserAPI, ServerName: cfg.Global.ServerName, DB: db,
		Logger: logrus.NewEntry(logrus.StandardLogger())})
	if err != nil {
		return "", err
	}
	res, err := ua.API().PerformAccountCreation(ctx, &uapi.PerformAccountCreationRequest{Localpart: localpart, Password: password, AccountType: uapi.AccountTypeUser})
	if err != nil {
		return "", err
	}
	return res.Account.UserID, nil
}
