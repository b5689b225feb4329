package bridge

import (
	"errors"
	"strconv"
	"strings"

	"github.com/mgsip/mgsip/mgcp"
)

// The one table between MGCP return codes (RFC 3435 §2.4, RFC 3661) and
// SIP statuses (RFC 3261 §21), and from SIP failures to the tone the
// phone hears (RFC 3660 line and generic packages).

// StatusForMGCP is the SIP status that reports a failed MGCP command to
// the SIP side.
func StatusForMGCP(err error) (int, string) {
	var re *mgcp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		switch re.Response.Code {
		case mgcp.CodeOffHook:
			return 486, "Busy Here"
		case mgcp.CodeEndpointUnknown:
			return 404, "Not Found"
		case mgcp.CodeEndpointNotReady, mgcp.CodeEndpointRestarting, mgcp.CodeEndpointRestarting5xx:
			return 480, "Temporarily Unavailable"
		case mgcp.CodeUnsupportedRemoteSDP, mgcp.CodeRemoteSDPError, mgcp.CodeCodecNegotiation,
			mgcp.CodePacketization, mgcp.CodeLCOAndSDPConflict:
			return 488, "Not Acceptable Here"
		case mgcp.CodeNoResources, mgcp.CodeNoBandwidth, mgcp.CodeOverload, mgcp.CodeNoEndpointAvailable,
			mgcp.CodeNoResourcesPermanent, mgcp.CodeNoBandwidthPermanent, mgcp.CodeConnectionLimit:
			return 503, "Service Unavailable"
		}
		if re.Response.Code.Class() == mgcp.ClassTransient {
			return 503, "Service Unavailable"
		}
		return 500, "Gateway Error"
	}
	if errors.Is(err, mgcp.ErrTimeout) {
		return 480, "Temporarily Unavailable"
	}
	return 500, "Gateway Error"
}

// ToneForStatus is the signal an off-hook phone hears when its call
// fails with a SIP status: busy for 486/600, congestion for a timeout,
// reorder otherwise.
func ToneForStatus(status int) string {
	switch status {
	case 486, 600:
		return "L/bz"
	case 408, 0:
		return "G/cg"
	}
	return "L/ro"
}

// mgcpCodeOf is the return code of a refused MGCP command (0 for a
// timeout or a local error), for the call's record.
func mgcpCodeOf(err error) int {
	var re *mgcp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return int(re.Response.Code)
	}
	return 0
}

// failedWhy says in an operator's words why an MGCP command failed, for
// call results and records: "CRCX failed: 501 Endpoint not ready", or
// "CRCX failed: no answer from the gateway".
func failedWhy(verb string, err error) string {
	var re *mgcp.ResponseError
	switch {
	case errors.As(err, &re) && re.Response != nil:
		text := re.Response.Comment
		if text == "" {
			text = re.Response.Code.Text()
		}
		return verb + " failed: " + strconv.Itoa(int(re.Response.Code)) + " " + text
	case errors.Is(err, mgcp.ErrTimeout):
		return verb + " failed: no answer from the gateway"
	case errors.Is(err, errNoConnection):
		return verb + " failed: no connection"
	}
	return verb + " failed: " + strings.TrimPrefix(err.Error(), "mgcp: ")
}
