package routing

import (
	"net/http"
	"strings"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// deviceJSON is the spec's Device object.
type deviceJSON struct {
	DeviceID    string `json:"device_id"`
	DisplayName string `json:"display_name,omitempty"`
	LastSeenIP  string `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64  `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d *uapi.Device) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

// Devices is GET /devices.
func (a *Accounts) Devices(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	res, err := a.UserAPI.QueryDevices(r.Context(), &uapi.QueryDevicesRequest{UserID: dev.UserID})
	if err != nil {
		return httputil.Response{}, err
	}
	out := make([]deviceJSON, len(res.Devices))
	for i := range res.Devices {
		out[i] = toDeviceJSON(&res.Devices[i])
	}
	return httputil.OK(map[string]any{"devices": out}), nil
}

// whoisConnection is one connection of GET /admin/whois: what is known of a device's last use.
type whoisConnection struct {
	IP        string `json:"ip"`
	LastSeen  int64  `json:"last_seen"`
	UserAgent string `json:"user_agent"`
}

// WhoIs is GET /admin/whois/{userId}: a local user's devices with their last connection,
// for the user themself or a server administrator (M_FORBIDDEN for anyone else).
func (a *Accounts) WhoIs(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	userID := httputil.Vars(r)["userID"]
	if userID != dev.UserID && dev.AccountType != uapi.AccountTypeAdmin {
		return httputil.Response{}, matrixerr.Forbidden("only server administrators may look up other users")
	}
	if !strings.HasSuffix(userID, ":"+a.ServerName) {
		return httputil.Response{}, matrixerr.NotFound("not a user of this server")
	}
	res, err := a.UserAPI.QueryDevices(r.Context(), &uapi.QueryDevicesRequest{UserID: userID})
	if err != nil {
		return httputil.Response{}, err
	}
	type session struct {
		Connections []whoisConnection `json:"connections"`
	}
	devices := map[string]map[string][]session{}
	for _, d := range res.Devices {
		conns := []whoisConnection{}
		if d.LastSeenTS > 0 {
			conns = append(conns, whoisConnection{IP: d.LastSeenIP, LastSeen: d.LastSeenTS, UserAgent: d.UserAgent})
		}
		devices[d.DeviceID] = map[string][]session{"sessions": {{Connections: conns}}}
	}
	return httputil.OK(map[string]any{"user_id": userID, "devices": devices}), nil
}

// Device is GET /devices/{deviceId}.
func (a *Accounts) Device(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	res, err := a.UserAPI.QueryDevices(r.Context(), &uapi.QueryDevicesRequest{UserID: dev.UserID})
	if err != nil {
		return httputil.Response{}, err
	}
	want := httputil.Vars(r)["deviceID"]
	for i := range res.Devices {
		if res.Devices[i].DeviceID == want {
			return httputil.OK(toDeviceJSON(&res.Devices[i])), nil
		}
	}
	return httputil.Response{}, matrixerr.NotFound("no such device")
}

// UpdateDevice is PUT /devices/{deviceId}.
func (a *Accounts) UpdateDevice(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body struct {
		DisplayName *string `json:"display_name"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	_, err := a.UserAPI.PerformDeviceUpdate(r.Context(), &uapi.PerformDeviceUpdateRequest{UserID: dev.UserID, DeviceID: httputil.Vars(r)["deviceID"], DisplayName: body.DisplayName})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}
