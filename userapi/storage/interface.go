// Package storage is the userapi's database: accounts, devices and their access tokens,
// profiles, account data and filters. The SQL in storage/sql runs on SQLite and PostgreSQL
// alike.
package storage

import (
	"context"
	"errors"
)

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when creating a row whose key is already taken.
var ErrExists = errors.New("already exists")

// Stored account types: the values of the userapi's api.AccountType that storage acts on.
const (
	AccountTypeUser  = 1
	AccountTypeGuest = 2
)

// Account is a stored account.
type Account struct {
	Localpart    string
	PasswordHash string
	AccountType  int
	CreatedTS    int64
}

// Device is a stored device. Its access token is stored only as a SHA-256 hash.
type Device struct {
	Localpart   string
	DeviceID    string
	DisplayName string
	CreatedTS   int64
	LastSeenTS  int64
	LastSeenIP  string
	UserAgent   string
	// AccountType is the account's type; only DeviceByTokenHash fills it in.
	AccountType int
}

// Profile is a user's display name and avatar.
type Profile struct {
	DisplayName string
	AvatarURL   string
}

// AccountData is one piece of account data; RoomID "" is global.
type AccountData struct {
	RoomID  string
	Type    string
	Content []byte
}

// Database is what the userapi stores. Every method is safe for concurrent use.
type Database interface {
	// CreateAccount stores an account and its profile (with displayName) atomically. It
	// returns ErrExists when the localpart is taken.
	CreateAccount(ctx context.Context, acc *Account, displayName string) error
	// Account returns the account or ErrNotFound.
	Account(ctx context.Context, localpart string) (*Account, error)
	// UpgradeGuest turns a guest account into an ordinary account with this password hash,
	// or returns ErrNotFound when no guest account has the localpart.
	UpgradeGuest(ctx context.Context, localpart, hash string) error
	// DeactivateAccount removes the account's password and devices (their tokens stop
	// working) in one transaction; the localpart stays taken. Idempotent; ErrNotFound for
	// an unknown account.
	DeactivateAccount(ctx context.Context, localpart string) error
	// SetPasswordHash replaces the account's password hash, or returns ErrNotFound.
	SetPasswordHash(ctx context.Context, localpart, hash string) error
	// PutDevice stores a device with the hash of its new access token. A device with the
	// same ID replaces the old one: its previous token stops working. It returns
	// ErrNotFound when the account does not exist.
	PutDevice(ctx context.Context, d *Device, tokenHash []byte) error
	// DeviceByTokenHash returns the device whose token has this hash, with its account's
	// type, or ErrNotFound.
	DeviceByTokenHash(ctx context.Context, tokenHash []byte) (*Device, error)
	// Devices lists the account's devices ordered by device ID.
	Devices(ctx context.Context, localpart string) ([]Device, error)
	// DeleteDevices deletes the listed devices; unknown IDs are ignored.
	DeleteDevices(ctx context.Context, localpart string, deviceIDs []string) error
	// DeleteDevicesExcept deletes every device of the account but except ("" deletes all).
	DeleteDevicesExcept(ctx context.Context, localpart, except string) error
	// SetDeviceDisplayName renames a device, or returns ErrNotFound.
	SetDeviceDisplayName(ctx context.Context, localpart, deviceID, name string) error
	// TouchDevice records that the device was seen at ts (milliseconds).
	TouchDevice(ctx context.Context, localpart, deviceID string, ts int64) error
	// Profile returns the profile or ErrNotFound.
	Profile(ctx context.Context, localpart string) (*Profile, error)
	// SetDisplayName and SetAvatarURL change one profile field and report whether its
	// value changed; ErrNotFound for an unknown account.
	SetDisplayName(ctx context.Context, localpart, value string) (bool, error)
	SetAvatarURL(ctx context.Context, localpart, value string) (bool, error)
	// PutAccountData stores (replaces) one piece of account data.
	PutAccountData(ctx context.Context, localpart string, data *AccountData) error
	// AccountData returns the account's data: global and every room's when roomID is "",
	// else only that room's; only of dataType when it is set.
	AccountData(ctx context.Context, localpart, roomID, dataType string) ([]AccountData, error)
	// PutFilter stores a filter and returns its ID; storing the same filter text for the
	// same account again returns the same ID.
	PutFilter(ctx context.Context, localpart string, filter []byte) (string, error)
	// Filter returns a stored filter or ErrNotFound.
	Filter(ctx context.Context, localpart, filterID string) ([]byte, error)
}
