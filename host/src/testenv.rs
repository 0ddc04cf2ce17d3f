//! An in-process test environment for capabilities: a cell's linear memory
//! without wasm, and `setup` on a temp dir. Imports run through the same
//! boundary object the runtime uses (`ImportHandle::call`), so a test exercises
//! the import as a cell would, minus the engine.

use pulp_ext_api::{
    CapabilityHandle, CellStateHandle, Code, GuestMemory, HostHandle, HostServices, Level, SetupEnv,
};

use crate::builtin::{self, Services};

/// The size of the fake linear memory.
pub const MEMORY_BYTES: usize = 1 << 20;

/// Where the fake guest's allocator starts: below it, scratch the test owns.
const HEAP_START: u32 = 1024;

/// A cell's memory and identity, as an import sees them.
pub struct FakeGuest {
    memory: Vec<u8>,
    next: u32,
    name: String,
    max_message_bytes: u64,
    state: CellStateHandle,
}

impl GuestMemory for FakeGuest {
    fn cell_name(&self) -> &str {
        &self.name
    }

    fn cell_id(&self) -> u64 {
        1
    }

    fn max_message_bytes(&self) -> u64 {
        self.max_message_bytes
    }

    fn read(&self, ptr: u32, len: u32) -> Result<&[u8], Code> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(Code::OUT_OF_BOUNDS)?;
        self.memory.get(start..end).ok_or(Code::OUT_OF_BOUNDS)
    }

    fn write(&mut self, ptr: u32, data: &[u8]) -> Result<(), Code> {
        let start = ptr as usize;
        let end = start.checked_add(data.len()).ok_or(Code::OUT_OF_BOUNDS)?;
        self.memory
            .get_mut(start..end)
            .ok_or(Code::OUT_OF_BOUNDS)?
            .copy_from_slice(data);
        Ok(())
    }

    fn alloc(&mut self, size: u32) -> Result<u32, Code> {
        let ptr = self.next;
        let end = ptr.checked_add(size).ok_or(Code::ALLOC)?;
        if end as usize > self.memory.len() {
            return Err(Code::ALLOC);
        }
        self.next = end;
        Ok(ptr)
    }

    fn cell_state(&self) -> &CellStateHandle {
        &self.state
    }
}

impl FakeGuest {
    /// Copies `bytes` into memory; their pointer and length as import arguments.
    pub fn place(&mut self, bytes: &[u8]) -> [u64; 2] {
        let ptr = self
            .alloc(bytes.len() as u32)
            .expect("room in the fake memory");
        self.write(ptr, bytes).unwrap();
        [u64::from(ptr), bytes.len() as u64]
    }

    /// Runs import `name` of `capability` with raw arguments, as a cell that
    /// lies about pointers and lengths would; the code it returns.
    pub fn call_raw(&mut self, capability: &CapabilityHandle, name: &str, args: &[u64]) -> i32 {
        let import = capability
            .imports()
            .iter()
            .find(|i| i.name() == name)
            .unwrap_or_else(|| panic!("{} has no import {name}", capability.name()));
        import.call(self, args)
    }

    /// Runs import `name` of `capability` with `inputs` as pointer/length pairs,
    /// and with two out-pointers after them when `returns` is set: the code,
    /// and what the import handed back.
    pub fn call(
        &mut self,
        capability: &CapabilityHandle,
        name: &str,
        inputs: &[&[u8]],
        returns: bool,
    ) -> Result<Vec<u8>, i32> {
        let import = capability
            .imports()
            .iter()
            .find(|i| i.name() == name)
            .unwrap_or_else(|| panic!("{} has no import {name}", capability.name()));
        let mut args: Vec<u64> = inputs.iter().flat_map(|input| self.place(input)).collect();
        let out = self.alloc(8).unwrap();
        if returns {
            args.extend([u64::from(out), u64::from(out + 4)]);
        }
        match import.call(self, &args) {
            0 if returns => {
                let word = |at| u32::from_le_bytes(self.read(at, 4).unwrap().try_into().unwrap());
                let (ptr, len) = (word(out), word(out + 4));
                Ok(self.read(ptr, len).unwrap().to_vec())
            }
            0 => Ok(Vec::new()),
            code => Err(code),
        }
    }
}

struct Quiet;

impl HostServices for Quiet {
    fn log(&self, _level: Level, _target: &str, _message: &str) {}

    fn max_level(&self) -> Level {
        Level::Error
    }

    fn wake(&self) {}
}

static QUIET: Quiet = Quiet;

/// The built-in capabilities over a temp storage root, with the async runtime
/// the listener's side needs; fields drop in order, the runtime last.
pub struct Env {
    pub services: Services,
    capabilities: Vec<CapabilityHandle>,
    pub dir: tempfile::TempDir,
    _io: tokio::runtime::Runtime,
}

impl Env {
    pub fn new() -> Env {
        let io = tokio::runtime::Runtime::new().unwrap();
        let services =
            Services::new(io.handle().clone(), Default::default(), Default::default()).unwrap();
        let capabilities = builtin::all(&services)
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        Env {
            services,
            capabilities,
            dir: tempfile::tempdir().unwrap(),
            _io: io,
        }
    }

    /// The built-in named `name`.
    pub fn capability(&self, name: &str) -> &CapabilityHandle {
        self.capabilities
            .iter()
            .find(|h| h.name() == name)
            .unwrap_or_else(|| panic!("no built-in {name}"))
    }

    /// Runs `capability`'s setup for cell `name`, its storage under the temp
    /// root, and returns the cell as its imports will see it.
    pub fn cell(&self, capability: &CapabilityHandle, name: &str) -> FakeGuest {
        let max_message_bytes = 64 * 1024;
        let storage_dir = self.dir.path().join(name);
        std::fs::create_dir_all(&storage_dir).unwrap();
        let state = capability
            .setup(&SetupEnv {
                cell: name.to_owned(),
                cell_id: 1,
                storage_dir,
                cell_config: vec![0x80],
                ext_config: vec![0x80],
                max_message_bytes,
                call_timeout_ms: 1_000,
                allowed_outbound_hosts: Vec::new(),
                host: HostHandle::new(&QUIET),
            })
            .unwrap_or_else(|e| panic!("setup of {}: {e}", capability.name()));
        FakeGuest {
            memory: vec![0; MEMORY_BYTES],
            next: HEAP_START,
            name: name.to_owned(),
            max_message_bytes,
            state,
        }
    }
}
