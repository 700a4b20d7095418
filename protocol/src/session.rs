pub struct EdgeSession; pub struct HubSession;
