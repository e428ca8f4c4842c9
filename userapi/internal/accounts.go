package internal

import (
	"context"
	"errors"
	"sort"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// PerformAccountCreation creates an account whose display name is its localpart. Guest
// accounts have no password; every other account needs one.
func (u *UserAPI) PerformAccountCreation(ctx context.Context, req *api.PerformAccountCreationRequest) (*api.PerformAccountCreationResponse, error) {
	if err := ValidateLocalpart(req.Localpart, u.ServerName); err != nil {
		return nil, err
	}
	accType := req.AccountType
	switch accType {
	case 0:
		accType = api.AccountTypeUser
	case api.AccountTypeUser, api.AccountTypeGuest, api.AccountTypeAdmin, api.AccountTypeAppService:
	default:
		return nil, matrixerr.InvalidParam("unknown account type")
	}
	hash := ""
	passwordless := accType == api.AccountTypeGuest || accType == api.AccountTypeAppService
	if !passwordless || req.Password != "" {
		if req.Password == "" {
			return nil, matrixerr.MissingParam("a password is required")
		}
		h, err := bcrypt.GenerateFromPassword(bcryptInput(req.Password), u.BCryptCost)
		if err != nil {
			return nil, err
		}
		hash = string(h)
	}
	acc := &storage.Account{Localpart: req.Localpart, PasswordHash: hash, AccountType: int(accType), CreatedTS: nowMS()}
	err := u.DB.CreateAccount(ctx, acc, req.Localpart)
	if errors.Is(err, storage.ErrExists) {
		return nil, matrixerr.UserInUse("this username is taken")
	}
	if err != nil {
		return nil, err
	}
	u.Metrics.accountsCreated.Inc()
	return &api.PerformAccountCreationResponse{Account: u.account(acc)}, nil
}

func (u *UserAPI) account(acc *storage.Account) *api.Account {
	return &api.Account{UserID: u.userID(acc.Localpart), Localpart: acc.Localpart, ServerName: u.ServerName, AccountType: api.AccountType(acc.AccountType)}
}

// PerformGuestUpgrade gives a guest account a password and makes it an ordinary account:
// M_FORBIDDEN when the localpart names no guest account (an upgraded one included).
func (u *UserAPI) PerformGuestUpgrade(ctx context.Context, req *api.PerformGuestUpgradeRequest) (*api.PerformGuestUpgradeResponse, error) {
	if req.Password == "" {
		return nil, matrixerr.MissingParam("a password is required")
	}
	h, err := bcrypt.GenerateFromPassword(bcryptInput(req.Password), u.BCryptCost)
	if err != nil {
		return nil, err
	}
	err = u.DB.UpgradeGuest(ctx, req.Localpart, string(h))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrixerr.Forbidden("not a guest account")
	}
	if err != nil {
		return nil, err
	}
	acc, err := u.DB.Account(ctx, req.Localpart)
	if err != nil {
		return nil, err
	}
	return &api.PerformGuestUpgradeResponse{Account: u.account(acc)}, nil
}

// PerformAccountDeactivation removes the account's password and logs out every device:
// nobody can log in to it again, and its localpart stays taken. With Erase the account is
// also marked erased, for good. Idempotent.
func (u *UserAPI) PerformAccountDeactivation(ctx context.Context, req *api.PerformAccountDeactivationRequest) (*api.PerformAccountDeactivationResponse, error) {
	err := u.DB.DeactivateAccount(ctx, req.Localpart, req.Erase, time.Now().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrixerr.NotFound("no such account")
	}
	if err != nil {
		return nil, err
	}
	return &api.PerformAccountDeactivationResponse{}, nil
}

// QueryErasedUsers returns the local users among req.UserIDs whose accounts were erased;
// other servers' users and malformed IDs are never erased.
func (u *UserAPI) QueryErasedUsers(ctx context.Context, req *api.QueryErasedUsersRequest) (*api.QueryErasedUsersResponse, error) {
	byLocalpart := map[string]string{}
	for _, id := range req.UserIDs {
		if lp, err := u.localpart(id); err == nil {
			byLocalpart[lp] = id
		}
	}
	if len(byLocalpart) == 0 {
		return &api.QueryErasedUsersResponse{Erased: []string{}}, nil
	}
	lps := make([]string, 0, len(byLocalpart))
	for lp := range byLocalpart {
		lps = append(lps, lp)
	}
	erased, err := u.DB.ErasedLocalparts(ctx, lps)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(erased))
	for _, lp := range erased {
		out = append(out, byLocalpart[lp])
	}
	sort.Strings(out)
	return &api.QueryErasedUsersResponse{Erased: out}, nil
}

// QueryAccount returns a local account, or a nil Account when there is none.
func (u *UserAPI) QueryAccount(ctx context.Context, req *api.QueryAccountRequest) (*api.QueryAccountResponse, error) {
	acc, err := u.DB.Account(ctx, req.Localpart)
	if errors.Is(err, storage.ErrNotFound) {
		return &api.QueryAccountResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	return &api.QueryAccountResponse{Account: u.account(acc)}, nil
}

// QueryLocalpartAvailable answers false for a taken localpart and M_INVALID_USERNAME for
// one that could never be registered.
func (u *UserAPI) QueryLocalpartAvailable(ctx context.Context, req *api.QueryLocalpartAvailableRequest) (*api.QueryLocalpartAvailableResponse, error) {
	if err := ValidateLocalpart(req.Localpart, u.ServerName); err != nil {
		return nil, err
	}
	_, err := u.DB.Account(ctx, req.Localpart)
	if errors.Is(err, storage.ErrNotFound) {
		return &api.QueryLocalpartAvailableResponse{Available: true}, nil
	}
	if err != nil {
		return nil, err
	}
	return &api.QueryLocalpartAvailableResponse{Available: false}, nil
}

// PerformPasswordUpdate sets a new password and, unless asked to keep them, logs out the
// account's other devices.
func (u *UserAPI) PerformPasswordUpdate(ctx context.Context, req *api.PerformPasswordUpdateRequest) (*api.PerformPasswordUpdateResponse, error) {
	if req.Password == "" {
		return nil, matrixerr.MissingParam("a password is required")
	}
	h, err := bcrypt.GenerateFromPassword(bcryptInput(req.Password), u.BCryptCost)
	if err != nil {
		return nil, err
	}
	err = u.DB.SetPasswordHash(ctx, req.Localpart, string(h))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrixerr.NotFound("no such account")
	}
	if err != nil {
		return nil, err
	}
	if !req.KeepDevices {
		changes, err := u.DB.DeleteDevicesExcept(ctx, req.Localpart, req.ExceptDeviceID)
		if err != nil {
			return nil, err
		}
		if err = u.announceKeyChanges(ctx, u.userID(req.Localpart), changes); err != nil {
			return nil, err
		}
	}
	return &api.PerformPasswordUpdateResponse{}, nil
}

// QueryAccountByPassword returns the account if the password matches, else M_FORBIDDEN.
// An unknown account costs the same bcrypt comparison and gets the same answer as a wrong
// password, so neither timing nor errors reveal which accounts exist.
func (u *UserAPI) QueryAccountByPassword(ctx context.Context, req *api.QueryAccountByPasswordRequest) (*api.QueryAccountByPasswordResponse, error) {
	acc, err := u.DB.Account(ctx, req.Localpart)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	hash := u.dummyHash
	if acc != nil && acc.PasswordHash != "" {
		hash = []byte(acc.PasswordHash)
	}
	match := bcrypt.CompareHashAndPassword(hash, bcryptInput(req.Password)) == nil
	if acc == nil || acc.PasswordHash == "" || !match {
		u.Metrics.passwordChecks.WithLabelValues("rejected").Inc()
		return nil, matrixerr.Forbidden("invalid username or password")
	}
	u.Metrics.passwordChecks.WithLabelValues("accepted").Inc()
	return &api.QueryAccountByPasswordResponse{Account: u.account(acc)}, nil
}

// QueryProfile returns a local user's profile, M_NOT_FOUND for unknown and remote users.
func (u *UserAPI) QueryProfile(ctx context.Context, req *api.QueryProfileRequest) (*api.QueryProfileResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, matrixerr.NotFound("profile not found")
	}
	p, err := u.DB.Profile(ctx, local)
	if err != nil {
		return nil, notFound(err, "profile not found")
	}
	return &api.QueryProfileResponse{DisplayName: p.DisplayName, AvatarURL: p.AvatarURL}, nil
}

// PerformSetDisplayName sets the display name; idempotent.
func (u *UserAPI) PerformSetDisplayName(ctx context.Context, req *api.PerformSetDisplayNameRequest) (*api.PerformSetDisplayNameResponse, error) {
	changed, err := u.DB.SetDisplayName(ctx, req.Localpart, req.DisplayName)
	if err != nil {
		return nil, notFound(err, "profile not found")
	}
	return &api.PerformSetDisplayNameResponse{Changed: changed}, nil
}

// PerformSetAvatarURL sets the avatar URL; idempotent.
func (u *UserAPI) PerformSetAvatarURL(ctx context.Context, req *api.PerformSetAvatarURLRequest) (*api.PerformSetAvatarURLResponse, error) {
	changed, err := u.DB.SetAvatarURL(ctx, req.Localpart, req.AvatarURL)
	if err != nil {
		return nil, notFound(err, "profile not found")
	}
	return &api.PerformSetAvatarURLResponse{Changed: changed}, nil
}
