package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// Database is the SQL userapi store.
type Database struct {
	db *sqlutil.DB
}

var _ storage.Database = (*Database)(nil)

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqlutil.DB) (*Database, error) {
	if err := sqlutil.Migrate(ctx, db, "userapi", migrations); err != nil {
		return nil, fmt.Errorf("migrate userapi schema: %w", err)
	}
	return &Database{db: db}, nil
}

// CreateAccount implements storage.Database.
func (d *Database) CreateAccount(ctx context.Context, acc *storage.Account, displayName string) error {
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx,
			"INSERT INTO userapi_accounts (localpart, password_hash, account_type, created_ts) VALUES ($1, $2, $3, $4)",
			acc.Localpart, acc.PasswordHash, acc.AccountType, acc.CreatedTS); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO userapi_profiles (localpart, display_name) VALUES ($1, $2)", acc.Localpart, displayName)
		return err
	})
	if sqlutil.IsUniqueViolation(err) {
		return storage.ErrExists
	}
	if err != nil {
		return fmt.Errorf("insert account: %w", err)
	}
	return nil
}

// UpgradeGuest implements storage.Database.
func (d *Database) UpgradeGuest(ctx context.Context, localpart, hash string) error {
	res, err := d.db.ExecContext(ctx, "UPDATE userapi_accounts SET password_hash = $1, account_type = $2"+
		" WHERE localpart = $3 AND account_type = $4", hash, storage.AccountTypeUser, localpart, storage.AccountTypeGuest)
	if err != nil {
		return fmt.Errorf("upgrade guest: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return storage.ErrNotFound
	}
	return nil
}

// DeactivateAccount implements storage.Database.
func (d *Database) DeactivateAccount(ctx context.Context, localpart string, erase bool, erasedTS int64) error {
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE userapi_accounts SET password_hash = '' WHERE localpart = $1", localpart)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return storage.ErrNotFound
		}
		if _, err = tx.ExecContext(ctx, "DELETE FROM userapi_devices WHERE localpart = $1", localpart); err != nil {
			return err
		}
		if !erase {
			return nil
		}
		_, err = tx.ExecContext(ctx, "INSERT INTO userapi_erased_accounts (localpart, erased_ts) VALUES ($1, $2) ON CONFLICT (localpart) DO NOTHING",
			localpart, erasedTS)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if err != nil {
		return fmt.Errorf("deactivate account: %w", err)
	}
	return nil
}

// ErasedLocalparts implements storage.Database.
func (d *Database) ErasedLocalparts(ctx context.Context, localparts []string) ([]string, error) {
	if len(localparts) == 0 {
		return nil, nil
	}
	query, args := d.db.Dialect.InList("SELECT localpart FROM userapi_erased_accounts WHERE localpart IN ({ids})", "{ids}", nil, localparts)
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("select erased accounts: %w", err)
	}
	out, err := sqlutil.Column[string](rows)
	if err != nil {
		return nil, fmt.Errorf("select erased accounts: %w", err)
	}
	return out, nil
}

// SetPasswordHash implements storage.Database.
func (d *Database) SetPasswordHash(ctx context.Context, localpart, hash string) error {
	res, err := d.db.ExecContext(ctx, "UPDATE userapi_accounts SET password_hash = $1 WHERE localpart = $2", hash, localpart)
	if err != nil {
		return fmt.Errorf("update password: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return storage.ErrNotFound
	}
	return nil
}

// Account implements storage.Database.
func (d *Database) Account(ctx context.Context, localpart string) (*storage.Account, error) {
	acc := storage.Account{Localpart: localpart}
	err := d.db.QueryRowContext(ctx,
		"SELECT password_hash, account_type, created_ts FROM userapi_accounts WHERE localpart = $1", localpart,
	).Scan(&acc.PasswordHash, &acc.AccountType, &acc.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("select account: %w", err)
	}
	return &acc, nil
}

// Profile implements storage.Database.
func (d *Database) Profile(ctx context.Context, localpart string) (*storage.Profile, error) {
	var p storage.Profile
	err := d.db.QueryRowContext(ctx,
		"SELECT display_name, avatar_url FROM userapi_profiles WHERE localpart = $1", localpart,
	).Scan(&p.DisplayName, &p.AvatarURL)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("select profile: %w", err)
	}
	return &p, nil
}

// SetDisplayName implements storage.Database.
func (d *Database) SetDisplayName(ctx context.Context, localpart, value string) (bool, error) {
	return d.setProfileField(ctx, "display_name", localpart, value)
}

// SetAvatarURL implements storage.Database.
func (d *Database) SetAvatarURL(ctx context.Context, localpart, value string) (bool, error) {
	return d.setProfileField(ctx, "avatar_url", localpart, value)
}

// setProfileField sets column (a constant chosen by the caller) of one profile.
func (d *Database) setProfileField(ctx context.Context, column, localpart, value string) (bool, error) {
	changed := false
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var old string
		err := tx.QueryRowContext(ctx, "SELECT "+column+" FROM userapi_profiles WHERE localpart = $1", localpart).Scan(&old)
		if errors.Is(err, sql.ErrNoRows) {
			return storage.ErrNotFound
		}
		if err != nil || old == value {
			return err
		}
		if _, err = tx.ExecContext(ctx, "UPDATE userapi_profiles SET "+column+" = $1 WHERE localpart = $2", value, localpart); err != nil {
			return err
		}
		changed = true
		return nil
	})
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return false, fmt.Errorf("update profile %s: %w", column, err)
	}
	return changed, err
}
