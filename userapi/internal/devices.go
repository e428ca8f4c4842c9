package internal

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// PerformDeviceCreation logs a device in with a new access token. A known device ID
// gets a new token and its old one stops working; without an ID a random one is chosen.
// A new device is announced on OutputKeyChangeEvent (others see the device list change).
func (u *UserAPI) PerformDeviceCreation(ctx context.Context, req *api.PerformDeviceCreationRequest) (*api.PerformDeviceCreationResponse, error) {
	deviceID := ""
	if req.DeviceID != nil {
		deviceID = *req.DeviceID
	}
	if len(deviceID) > maxDeviceIDBytes {
		return nil, matrixerr.InvalidParam("device_id is too long")
	}
	if deviceID == "" {
		var err error
		if deviceID, err = newDeviceID(); err != nil {
			return nil, err
		}
	}
	token, err := newAccessToken()
	if err != nil {
		return nil, err
	}
	now := nowMS()
	dev := &storage.Device{Localpart: req.Localpart, DeviceID: deviceID, CreatedTS: now, LastSeenTS: now, LastSeenIP: req.IP, UserAgent: req.UserAgent}
	if req.DisplayName != nil {
		dev.DisplayName = *req.DisplayName
	}
	change, err := u.DB.PutDevice(ctx, dev, hashToken(token), u.deviceChange(u.userID(req.Localpart)))
	if err != nil {
		return nil, notFound(err, "no such account")
	}
	if change != nil {
		u.Announce(ctx)
	}
	return &api.PerformDeviceCreationResponse{Device: u.device(dev), AccessToken: token}, nil
}

func (u *UserAPI) device(d *storage.Device) *api.Device {
	return &api.Device{UserID: u.userID(d.Localpart), DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenTS: d.LastSeenTS, LastSeenIP: d.LastSeenIP, UserAgent: d.UserAgent}
}

// QueryAccessToken returns the token's device, or a nil Device for an unknown token. As
// bookkeeping it refreshes the device's last-seen time when that is older than
// lastSeenGranularity; a failure to do so is logged, not returned.
func (u *UserAPI) QueryAccessToken(ctx context.Context, req *api.QueryAccessTokenRequest) (*api.QueryAccessTokenResponse, error) {
	if as := u.AppServices.AppServiceByToken(req.AccessToken); as != nil {
		return u.appServiceDevice(ctx, as, req.UserID, req.DeviceID)
	}
	dev, err := u.DB.DeviceByTokenHash(ctx, hashToken(req.AccessToken))
	if errors.Is(err, storage.ErrNotFound) {
		return &api.QueryAccessTokenResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if now := nowMS(); now-dev.LastSeenTS > lastSeenGranularity.Milliseconds() {
		if err := u.DB.TouchDevice(ctx, dev.Localpart, dev.DeviceID, now); err != nil {
			u.Logger.WithError(err).Warn("recording device last-seen time failed")
		} else {
			dev.LastSeenTS = now
		}
	}
	res := u.device(dev)
	res.AccountType = api.AccountType(dev.AccountType)
	return &api.QueryAccessTokenResponse{Device: res}, nil
}

// appServiceDevice is who a request with the service's as_token acts as: userID (the
// user_id query parameter), which must be a registered local user in the service's
// namespace (403 M_FORBIDDEN otherwise), or the service's sender when userID is empty; with
// deviceID (the device_id query parameter, spec v1.17) on that user's device, which must
// exist (400 M_UNKNOWN_DEVICE otherwise).
func (u *UserAPI) appServiceDevice(ctx context.Context, as *config.ApplicationService, userID, deviceID string) (*api.QueryAccessTokenResponse, error) {
	if userID == "" {
		userID = as.SenderUserID()
	}
	if !as.OwnsUserID(userID) {
		return nil, matrixerr.Forbidden("the application service cannot act as this user")
	}
	local, err := u.localpart(userID)
	if err != nil {
		return nil, matrixerr.Forbidden("the application service cannot act as this user")
	}
	if _, err := u.DB.Account(ctx, local); errors.Is(err, storage.ErrNotFound) {
		return nil, matrixerr.Forbidden("the application service has not registered this user")
	} else if err != nil {
		return nil, err
	}
	dev := &api.Device{UserID: userID, AccountType: api.AccountTypeAppService, AppServiceID: as.ID, NotRateLimited: !as.IsRateLimited()}
	if deviceID != "" {
		devices, err := u.DB.Devices(ctx, local)
		if err != nil {
			return nil, err
		}
		i := slices.IndexFunc(devices, func(d storage.Device) bool { return d.DeviceID == deviceID })
		if i < 0 {
			return nil, matrixerr.UnknownDevice("the user has no such device")
		}
		dev.DeviceID, dev.DisplayName = deviceID, devices[i].DisplayName
	}
	return &api.QueryAccessTokenResponse{Device: dev}, nil
}

// EnsureAppServiceSenders creates the account of every application service's sender that
// does not exist yet. Idempotent: run at every start.
func (u *UserAPI) EnsureAppServiceSenders(ctx context.Context) error {
	for _, as := range u.AppServices.Registrations {
		err := u.DB.CreateAccount(ctx, &storage.Account{Localpart: as.SenderLocalpart, AccountType: int(api.AccountTypeAppService), CreatedTS: nowMS()}, as.SenderLocalpart)
		if err != nil && !errors.Is(err, storage.ErrExists) {
			return fmt.Errorf("create the sender of application service %s: %w", as.ID, err)
		}
	}
	return nil
}

// PerformDeviceDeletion logs devices out and deletes their keys: the listed ones, or with
// All every device except ExceptDeviceID; each deleted device is announced on
// OutputKeyChangeEvent. Idempotent.
func (u *UserAPI) PerformDeviceDeletion(ctx context.Context, req *api.PerformDeviceDeletionRequest) (*api.PerformDeviceDeletionResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	var changes []storage.KeyChange
	switch {
	case req.All:
		changes, err = u.DB.DeleteDevicesExcept(ctx, local, req.ExceptDeviceID, u.deviceChanges(req.UserID))
	case len(req.DeviceIDs) > 0:
		changes, err = u.DB.DeleteDevices(ctx, local, req.DeviceIDs, u.deviceChanges(req.UserID))
	}
	if err != nil {
		return nil, err
	}
	if len(changes) > 0 {
		u.Announce(ctx)
	}
	return &api.PerformDeviceDeletionResponse{}, nil
}

// QueryDevices lists a local user's devices.
func (u *UserAPI) QueryDevices(ctx context.Context, req *api.QueryDevicesRequest) (*api.QueryDevicesResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	devs, err := u.DB.Devices(ctx, local)
	if err != nil {
		return nil, err
	}
	out := make([]api.Device, len(devs))
	for i := range devs {
		out[i] = *u.device(&devs[i])
	}
	return &api.QueryDevicesResponse{Devices: out}, nil
}

// PerformDeviceUpdate renames a device; M_NOT_FOUND if the user has no such device. A
// nil DisplayName changes nothing. A new name is announced on OutputKeyChangeEvent (it is
// part of the device's keys as others see them).
func (u *UserAPI) PerformDeviceUpdate(ctx context.Context, req *api.PerformDeviceUpdateRequest) (*api.PerformDeviceUpdateResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	if req.DisplayName == nil {
		devs, err := u.DB.Devices(ctx, local)
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			if d.DeviceID == req.DeviceID {
				return &api.PerformDeviceUpdateResponse{}, nil
			}
		}
		return nil, matrixerr.NotFound("no such device")
	}
	change, err := u.DB.SetDeviceDisplayName(ctx, local, req.DeviceID, *req.DisplayName, u.deviceChange(req.UserID))
	if err != nil {
		return nil, notFound(err, "no such device")
	}
	if change != nil {
		u.Announce(ctx)
	}
	return &api.PerformDeviceUpdateResponse{}, nil
}
