// Package storage is the userapi's database: accounts, devices and their access tokens,
// profiles, account data, filters and end-to-end encryption keys. The SQL in storage/sql runs on SQLite and PostgreSQL
// alike.
package storage

import (
	"context"
	"errors"
	"time"
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

// ThreePID is a third-party identifier (an email address, a phone number) of a local
// account, with the identity server it was bound on through this server ("" when none).
type ThreePID struct {
	Medium   string
	Address  string
	IDServer string
	AddedTS  int64
}

// Output is a record announcing a change, stored in the outbox in the transaction that
// stores the change, and numbered there: Seq is dense from 1 per (Topic, Partition).
type Output struct {
	// Topic is the topic's name without the configured prefix (api.TopicOutputClientData).
	Topic     string
	Partition int32
	Key       string
	// Payload makes the record from its number; it is called inside the transaction,
	// after the change was written.
	Payload func(seq int64) ([]byte, error)
}

// Announcement makes, inside the transaction that stores a key change and after it was
// written, the outbox records announcing it from what the change gave (its stream IDs); it
// is called only when something changed. A nil Announcement, or nil records, announce
// nothing.
type Announcement[T any] func(result T) ([]*Output, error)

// CrossSigningChange is what a change of a user's cross-signing keys gave: the user's new
// device-list stream ID and every cross-signing key they have after it, by purpose.
type CrossSigningChange struct {
	StreamID int64
	Keys     map[string][]byte
}

// Outbound is a stored output record.
type Outbound struct {
	// ID is the row's key, in the order the records were stored.
	ID        int64
	Topic     string
	Partition int32
	Seq       int64
	Key       string
	Payload   []byte
}

// Database is what the userapi stores. Every method is safe for concurrent use.
// Every method that changes a device list (taking a device-list stream ID) takes an
// Announcement, whose records it stores in the outbox in the same transaction.
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
	// working) in one transaction; the localpart stays taken. With erase it also marks the
	// account erased, at erasedTS (milliseconds), in the same transaction; a later call
	// never unmarks it. Idempotent; ErrNotFound for an unknown account.
	DeactivateAccount(ctx context.Context, localpart string, erase bool, erasedTS int64) error
	// ErasedLocalparts returns those of localparts whose accounts were erased, in no
	// particular order.
	ErasedLocalparts(ctx context.Context, localparts []string) ([]string, error)
	// SetPasswordHash replaces the account's password hash, or returns ErrNotFound.
	SetPasswordHash(ctx context.Context, localpart, hash string) error
	// PutDevice stores a device with the hash of its new access token. A device with the
	// same ID replaces the old one: its previous token stops working. A new device takes a
	// device-list stream ID in the same transaction and is returned as a KeyChange (nil for
	// a known device). It returns ErrNotFound when the account does not exist.
	PutDevice(ctx context.Context, d *Device, tokenHash []byte, ann Announcement[*KeyChange]) (*KeyChange, error)
	// DeviceByTokenHash returns the device whose token has this hash, with its account's
	// type, or ErrNotFound.
	DeviceByTokenHash(ctx context.Context, tokenHash []byte) (*Device, error)
	// Devices lists the account's devices ordered by device ID.
	Devices(ctx context.Context, localpart string) ([]Device, error)
	// DeleteDevices deletes the listed devices with their keys; unknown IDs are ignored.
	// It returns a deleted KeyChange per device that existed, in the same transaction.
	DeleteDevices(ctx context.Context, localpart string, deviceIDs []string, ann Announcement[[]KeyChange]) ([]KeyChange, error)
	// DeleteDevicesExcept deletes every device of the account but except ("" deletes all),
	// like DeleteDevices.
	DeleteDevicesExcept(ctx context.Context, localpart, except string, ann Announcement[[]KeyChange]) ([]KeyChange, error)
	// SetDeviceDisplayName renames a device, or returns ErrNotFound. A new name takes a
	// device-list stream ID in the same transaction and is returned as a KeyChange with the
	// device's keys (nil when the name is the same).
	SetDeviceDisplayName(ctx context.Context, localpart, deviceID, name string, ann Announcement[*KeyChange]) (*KeyChange, error)
	// TouchDevice records that the device was seen at ts (milliseconds).
	TouchDevice(ctx context.Context, localpart, deviceID string, ts int64) error
	// Profile returns the profile or ErrNotFound.
	Profile(ctx context.Context, localpart string) (*Profile, error)
	// SetDisplayName and SetAvatarURL change one profile field and report whether its
	// value changed; ErrNotFound for an unknown account.
	SetDisplayName(ctx context.Context, localpart, value string) (bool, error)
	SetAvatarURL(ctx context.Context, localpart, value string) (bool, error)
	// PutAccountData stores (replaces) one piece of account data and, when out is set, its
	// announcement in the outbox in the same transaction (returned; nil without out).
	PutAccountData(ctx context.Context, localpart string, data *AccountData, out *Output) (*Outbound, error)
	// UpdateAccountData replaces one piece of account data with what update makes of the
	// stored content (nil when there is none), atomically with respect to other updates of
	// the same piece, and returns the new content; out, when set, is stored in the outbox
	// in the same transaction, after update ran. An error from update stores nothing.
	UpdateAccountData(ctx context.Context, localpart, roomID, dataType string, update func(old []byte) ([]byte, error), out *Output) ([]byte, *Outbound, error)
	// Outbox returns the output records stored but not yet produced, in the order they
	// were stored.
	Outbox(ctx context.Context) ([]Outbound, error)
	// MarkProduced records that output records were produced; they stay for replay until
	// PruneOutbox deletes them.
	MarkProduced(ctx context.Context, ids []int64) error
	// PruneOutbox deletes the produced output records stored before before.
	PruneOutbox(ctx context.Context, before time.Time) error
	// OutputsAfter returns at most limit output records of topic's partition numbered
	// above after, in order, and the partition's last number (0: none yet).
	OutputsAfter(ctx context.Context, topic string, partition int32, after int64, limit int) ([]Outbound, int64, error)
	// AccountData returns the account's data: global and every room's when roomID is "",
	// else only that room's; only of dataType when it is set.
	AccountData(ctx context.Context, localpart, roomID, dataType string) ([]AccountData, error)
	// PutThreePID records that the 3PID belongs to the account, replacing what was
	// recorded for the same medium and address (of any account).
	PutThreePID(ctx context.Context, localpart string, tp *ThreePID) error
	// DeleteThreePID forgets the account's 3PID; unknown ones are ignored.
	DeleteThreePID(ctx context.Context, localpart, medium, address string) error
	// ThreePIDs lists the account's 3PIDs ordered by medium and address.
	ThreePIDs(ctx context.Context, localpart string) ([]ThreePID, error)
	// PutFilter stores a filter and returns its ID; storing the same filter text for the
	// same account again returns the same ID.
	PutFilter(ctx context.Context, localpart string, filter []byte) (string, error)
	// Filter returns a stored filter or ErrNotFound.
	Filter(ctx context.Context, localpart, filterID string) ([]byte, error)

	// UploadKeys stores a device's keys in one transaction: DeviceKeys (when set) replaces
	// the device's keys, one-time keys whose ID the device already has are ignored, fallback
	// keys replace the device's key of their algorithm and are unused again. It returns the
	// KeyChange when the device keys changed (nil otherwise) and the device's one-time key
	// counts afterwards.
	UploadKeys(ctx context.Context, up *KeyUpload, ann Announcement[*KeyChange]) (*KeyChange, map[string]int, error)
	// DeviceKeys returns the stored device keys of the account's devices among deviceIDs
	// (every device when deviceIDs is empty).
	DeviceKeys(ctx context.Context, localpart string, deviceIDs []string) ([]DeviceKeys, error)
	// ClaimKeys hands out one key per claim, in one transaction: a one-time key of the
	// device and algorithm, which it removes, else the device's fallback key of algorithm
	// (marking it used), else nil at that claim's index. Each one-time key is returned by
	// exactly one claim, however many run at once.
	ClaimKeys(ctx context.Context, claims []KeyClaim) ([]*OneTimeKey, error)
	// KeyCounts is the device's one-time key count per algorithm and the algorithms of its
	// unused fallback keys.
	KeyCounts(ctx context.Context, localpart, deviceID string) (map[string]int, []string, error)
	// CrossSigningKeys returns the account's cross-signing keys by purpose ("master",
	// "self_signing", "user_signing"); none is an empty map.
	CrossSigningKeys(ctx context.Context, localpart string) (map[string][]byte, error)
	// PutCrossSigningKeys replaces the account's keys of the purposes in keys and returns
	// the account's new device-list stream ID.
	PutCrossSigningKeys(ctx context.Context, localpart string, keys map[string][]byte, ann Announcement[CrossSigningChange]) (int64, error)
	// PutKeySignatures stores signatures (replacing one by the same signer key on the same
	// target key) and advances the device-list stream of each localpart in announce,
	// returning the new stream IDs.
	PutKeySignatures(ctx context.Context, sigs []KeySignature, announce []string, ann Announcement[map[string]int64]) (map[string]int64, error)
	// DeviceListStream is the account's device-list stream ID (0 before any change).
	DeviceListStream(ctx context.Context, localpart string) (int64, error)
	// ApplyRemoteDeviceUpdate applies one m.device_list_update of a remote user to the cache
	// of their device list. It returns stream 0 when the update is older than the cached
	// list (nothing changes), and for the update the cache holds (a redelivery) the stream
	// it got then, changing nothing. Otherwise the
	// device is stored (or deleted) and the list marked stale when the update's prev_id
	// names a stream ID the cache has not seen (or nothing was cached, or the list was stale
	// already): stale reports that, and the list must be fetched again before it is
	// trusted. stream is the new stream ID this server announces the change at (a stream per
	// remote user, in the same table as local users' streams, keyed by the full user ID).
	ApplyRemoteDeviceUpdate(ctx context.Context, u *RemoteDeviceUpdate, ann Announcement[int64]) (stream int64, stale bool, err error)
	// PutRemoteCrossSigningKeys replaces a remote user's cached master and self-signing
	// keys (nil: left as they are), marks their cached device list stale (an
	// m.signing_key_update has no stream ID, and the change may have come with new
	// signatures on their devices, which only a fetch of the list shows), and returns the
	// new stream ID as ApplyRemoteDeviceUpdate does.
	PutRemoteCrossSigningKeys(ctx context.Context, userID string, master, selfSigning []byte, ann Announcement[int64]) (int64, error)
	// ReplaceRemoteDeviceList replaces the cached device list of a remote user with l, a
	// list fetched from their server, and marks it fresh; it returns the new stream ID, or
	// 0 when the cache already holds a newer list (l.StreamID below the cached one).
	ReplaceRemoteDeviceList(ctx context.Context, userID string, l *RemoteDeviceList, ann Announcement[int64]) (int64, error)
	// MarkRemoteDeviceListsStale marks the cached device lists of those of userIDs that
	// have one stale.
	MarkRemoteDeviceListsStale(ctx context.Context, userIDs []string) error
	// RemoteDeviceLists returns the cached device lists of the users among userIDs that
	// have one.
	RemoteDeviceLists(ctx context.Context, userIDs []string) (map[string]*RemoteDeviceList, error)
	// CreateKeyBackup stores a new backup version (one above every version the account
	// ever had) and returns it.
	CreateKeyBackup(ctx context.Context, localpart, algorithm string, authData []byte) (string, error)
	// UpdateKeyBackup replaces a version's auth data; ErrNotFound for no such version.
	UpdateKeyBackup(ctx context.Context, localpart, version string, authData []byte) error
	// DeleteKeyBackup deletes a version and its keys; ErrNotFound for no such version.
	DeleteKeyBackup(ctx context.Context, localpart, version string) error
	// KeyBackup is a version's metadata ("" is the latest); ErrNotFound when there is none.
	KeyBackup(ctx context.Context, localpart, version string) (*KeyBackup, error)
	// PutRoomKeys stores keys in version, which must be the latest (else ErrWrongVersion),
	// keeping a stored key that is better (verified, then lower first message index, then
	// fewer forwards). It returns the version afterwards.
	PutRoomKeys(ctx context.Context, localpart, version string, keys []RoomKey) (*KeyBackup, error)
	// RoomKeys returns a version's keys: all, of roomID, or of roomID's sessionID.
	RoomKeys(ctx context.Context, localpart, version, roomID, sessionID string) ([]RoomKey, error)
	// DeleteRoomKeys deletes keys like RoomKeys selects them and returns the version afterwards.
	DeleteRoomKeys(ctx context.Context, localpart, version, roomID, sessionID string) (*KeyBackup, error)
	// KeySignatures returns the stored signatures on targetUserID's keys.
	KeySignatures(ctx context.Context, targetUserID string) ([]KeySignature, error)
	// KeySignaturesBy returns the stored signatures signerUserID made on the keys of
	// targetUserIDs.
	KeySignaturesBy(ctx context.Context, signerUserID string, targetUserIDs []string) ([]KeySignature, error)
}

// KeySignature is a signature of SignerUserID's key SignerKeyID ("ed25519:<key>") on
// TargetUserID's key TargetKeyID (a device ID, or a master key's public key).
type KeySignature struct {
	TargetUserID string
	TargetKeyID  string
	SignerUserID string
	SignerKeyID  string
	Signature    string
}

// KeyUpload is one device's POST /keys/upload, already validated.
type KeyUpload struct {
	Localpart    string
	DeviceID     string
	DeviceKeys   []byte
	OneTimeKeys  []OneTimeKey
	FallbackKeys []OneTimeKey
}

// KeyClaim asks for one key of a local device.
type KeyClaim struct {
	Localpart string
	DeviceID  string
	Algorithm string
}

// OneTimeKey is a one-time or fallback key: KeyID is "<algorithm>:<id>".
type OneTimeKey struct {
	Algorithm string
	KeyID     string
	JSON      []byte
}

// DeviceKeys is a device's signed device keys.
type DeviceKeys struct {
	DeviceID string
	JSON     []byte
}

// KeyChange is a change of a device (new, renamed, keys uploaded, deleted): the account's
// device-list stream ID after it, and unless Deleted the device's keys (absent when it has
// none) and display name.
type KeyChange struct {
	DeviceID    string
	StreamID    int64
	Deleted     bool
	JSON        []byte
	DisplayName string
}

// RemoteDevice is a device of another server's user as this server caches it; JSON is its
// device keys, nil when it has none that passed the checks.
type RemoteDevice struct {
	DeviceID    string
	DisplayName string
	JSON        []byte
}

// RemoteDeviceList is the cached device list of another server's user: StreamID is their
// server's stream ID of the newest change applied; Stale marks a list that may have missed
// a change.
type RemoteDeviceList struct {
	StreamID       int64
	Stale          bool
	Devices        []RemoteDevice
	MasterKey      []byte
	SelfSigningKey []byte
}

// RemoteDeviceUpdate is one received m.device_list_update, checked.
type RemoteDeviceUpdate struct {
	UserID   string
	Device   RemoteDevice
	StreamID int64
	PrevIDs  []int64
	Deleted  bool
}

// ErrWrongVersion is returned when keys are stored in a backup version that is not the
// latest; Current is the latest.
type ErrWrongVersion struct {
	Current string
}

func (e *ErrWrongVersion) Error() string {
	return "not the current backup version (" + e.Current + ")"
}

// KeyBackup is a backup version's metadata; ETag changes whenever its keys change.
type KeyBackup struct {
	Version   string
	Algorithm string
	AuthData  []byte
	Count     int64
	ETag      int64
}

// RoomKey is one backed-up room key.
type RoomKey struct {
	RoomID            string
	SessionID         string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       []byte
}

// Better reports whether k should replace old: a verified key beats an unverified one,
// then the lower first message index, then the fewer forwards.
func (k *RoomKey) Better(old *RoomKey) bool {
	if k.IsVerified != old.IsVerified {
		return k.IsVerified
	}
	if k.FirstMessageIndex != old.FirstMessageIndex {
		return k.FirstMessageIndex < old.FirstMessageIndex
	}
	return k.ForwardedCount < old.ForwardedCount
}
