package mgcptest

import "errors"

// Sentinel errors of the fake gateway.
var (
	// ErrNotNotified is returned by the user actions (OffHook, OnHook,
	// Flash, Dial, Collect) when the event they caused sent no NTFY: it
	// was quarantined (the endpoint is in notification state), not
	// requested, accumulated, or digits are still being collected. The
	// wrapped message says which.
	ErrNotNotified = errors.New("mgcptest: no notification sent")
	// ErrHookState is returned by a user action that the phone's hook
	// state makes impossible: going off hook twice, dialing or flashing on
	// hook.
	ErrHookState = errors.New("mgcptest: not possible in the phone's hook state")
)
