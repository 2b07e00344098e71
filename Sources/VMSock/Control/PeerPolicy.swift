import Glibc

/// The credentials of the process at the other end of a control socket (SO_PEERCRED).
public struct PeerCredentials: Sendable, Equatable {
    public var pid: pid_t
    public var uid: uid_t
    public var gid: gid_t
}

/// Which peers a side accepts, judged by SO_PEERCRED at connect time.
public enum PeerPolicy: Sendable, Equatable {
    /// Our own user, or root (the default).
    case sameUser
    /// Our own user, root, or any of these users.
    case users([uid_t])
    /// Anyone who can reach the endpoint.
    case anyUser

    public func admits(_ peer: PeerCredentials) -> Bool {
        if peer.uid == 0 || peer.uid == Sys.userID() { return true }
        switch self {
        case .sameUser: return false
        case .users(let uids): return uids.contains(peer.uid)
        case .anyUser: return true
        }
    }
}
