//! One live cell instance: linking, the ABI calls, the step envelope.

use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use pulp_ext_api::{CellStateHandle, Code, GuestMemory, ValType};
use pulp_wire::envelope::{self, Header};
use wasmtime::{
    Caller, ExternType, FuncType, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder,
    Trap, TypedFunc, UpdateDeadline, ValRaw, WasmBacktrace,
};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::WasiP1Ctx;

use super::Runtime;
use super::output::CellOutput;
use crate::metrics;
use crate::registry::{CellCapabilities, Entry, MAX_IMPORT_PARAMS, signature};

/// Elements one table may hold (8 bytes each on the host): room for the
/// function tables of large Go modules, far from a memory bomb.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Tables one instance may define or grow.
const MAX_TABLES: usize = 4;

/// Everything needed to (re)start one cell.
pub struct CellSpec {
    pub name: Arc<str>,
    pub id: u64,
    pub module: Module,
    pub config: Vec<u8>,
    pub max_memory_pages: u32,
    pub call_timeout_ms: u64,
    pub max_message_bytes: u64,
    pub capabilities: CellCapabilities,
    /// Each declared capability's state for this cell, in `capabilities.declared`
    /// order; set by the capabilities' `setup`, kept across restarts.
    pub states: Arc<Vec<Arc<CellStateHandle>>>,
}

/// What a capability without state for the cell is lent.
static NO_STATE: CellStateHandle = CellStateHandle::none();

/// Why a call into the cell did not return normally.
#[derive(Debug)]
pub enum Failure {
    Trap(String),
    Timeout(u64),
    /// The host is shutting down and interrupted the call.
    Stopped,
    /// WASI `proc_exit`: 0 is an orderly exit.
    Exit(i32),
    /// `pulp_init` returned non-zero.
    InitFailed(i32),
    Setup(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Trap(t) => write!(f, "trapped: {t}"),
            Failure::Timeout(ms) => write!(
                f,
                "call exceeded call_timeout_ms = {ms} and was interrupted"
            ),
            Failure::Stopped => f.write_str("interrupted by host shutdown"),
            Failure::Exit(code) => write!(f, "exited with code {code}"),
            Failure::InitFailed(code) => write!(f, "pulp_init returned {code}"),
            Failure::Setup(e) => f.write_str(e),
        }
    }
}

/// What the wasm store holds for one running instance.
pub struct StoreData {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
    memory: Option<Memory>,
    alloc: Option<TypedFunc<i32, i32>>,
    name: Arc<str>,
    id: u64,
    max_message_bytes: u64,
    /// When the running call's `call_timeout_ms` runs out.
    deadline: Instant,
}

/// The calling cell, as a host import sees it.
struct CallerGuest<'a, 'b> {
    caller: &'a mut Caller<'b, StoreData>,
    state: &'a CellStateHandle,
}

impl GuestMemory for CallerGuest<'_, '_> {
    fn cell_name(&self) -> &str {
        &self.caller.data().name
    }

    fn cell_id(&self) -> u64 {
        self.caller.data().id
    }

    fn max_message_bytes(&self) -> u64 {
        self.caller.data().max_message_bytes
    }

    fn read(&self, ptr: u32, len: u32) -> Result<&[u8], Code> {
        let memory = self.caller.data().memory.ok_or(Code::OUT_OF_BOUNDS)?;
        let data = memory.data(&*self.caller);
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(Code::OUT_OF_BOUNDS)?;
        data.get(start..end).ok_or(Code::OUT_OF_BOUNDS)
    }

    fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), Code> {
        let memory = self.caller.data().memory.ok_or(Code::WRITE)?;
        memory
            .write(&mut *self.caller, ptr as usize, bytes)
            .map_err(|_| Code::OUT_OF_BOUNDS)
    }

    fn cell_state(&self) -> &CellStateHandle {
        self.state
    }

    fn alloc(&mut self, size: u32) -> Result<u32, Code> {
        // Zero bytes need no buffer, and Go's allocator answers 0 for them;
        // libraries built for interface 1.0 still ask.
        if size == 0 {
            return Ok(0);
        }
        let alloc = self.caller.data().alloc.clone().ok_or(Code::ALLOC)?;
        let size = i32::try_from(size).map_err(|_| Code::TOO_LARGE)?;
        match alloc.call(&mut *self.caller, size) {
            Ok(0) | Err(_) => Err(Code::ALLOC),
            Ok(ptr) => Ok(ptr as u32),
        }
    }
}

fn wasm_type(t: ValType) -> wasmtime::ValType {
    match t {
        ValType::I32 => wasmtime::ValType::I32,
        ValType::I64 => wasmtime::ValType::I64,
        ValType::F32 => wasmtime::ValType::F32,
        ValType::F64 => wasmtime::ValType::F64,
    }
}

fn same_signature(ty: &FuncType, params: &[ValType]) -> bool {
    let results: Vec<_> = ty.results().collect();
    ty.params().len() == params.len()
        && ty
            .params()
            .zip(params)
            .all(|(a, b)| wasmtime::ValType::eq(&a, &wasm_type(*b)))
        && results.len() == 1
        && results[0].is_i32()
}

fn describe_type(ty: &FuncType) -> String {
    let params: Vec<String> = ty.params().map(|p| p.to_string()).collect();
    let results: Vec<String> = ty.results().map(|p| p.to_string()).collect();
    format!("({}) -> ({})", params.join(", "), results.join(", "))
}

enum Binding<'a> {
    /// The entry's import `.1`, from the `.2`-th declared capability.
    Real(&'a Arc<Entry>, usize, usize),
    Stub(&'a Arc<Entry>, usize),
    NotDeclared(&'a Arc<Entry>, usize),
}

fn find_binding<'a>(caps: &'a CellCapabilities, name: &str) -> Option<Binding<'a>> {
    for (slot, entry) in caps.declared.iter().enumerate() {
        if let Some(i) = entry.handle.imports().iter().position(|i| i.name() == name) {
            return Some(Binding::Real(entry, i, slot));
        }
    }
    for entry in &caps.undeclared {
        if let Some(i) = entry
            .handle
            .stub_imports()
            .iter()
            .position(|i| i.name() == name)
        {
            return Some(Binding::Stub(entry, i));
        }
        if let Some(i) = entry.handle.imports().iter().position(|i| i.name() == name) {
            return Some(Binding::NotDeclared(entry, i));
        }
    }
    None
}

/// Checks every import of `module` against what the cell's capabilities provide,
/// without instantiating it; the error names the import and what to do.
pub fn link_check(cell: &str, module: &Module, caps: &CellCapabilities) -> Result<(), String> {
    for import in module.imports() {
        check_import(cell, &import, caps)?;
    }
    use wasmtime::ValType::I32;
    let required: [(&str, &[wasmtime::ValType], &[wasmtime::ValType]); 3] = [
        ("pulp_alloc", &[I32], &[I32]),
        ("pulp_init", &[I32, I32], &[I32]),
        ("pulp_step", &[I32, I32], &[I32]),
    ];
    for (name, params, results) in required {
        let found = match module.get_export(name) {
            Some(ExternType::Func(ty)) => {
                ty.params().len() == params.len()
                    && ty.results().len() == results.len()
                    && ty.params().chain(ty.results()).all(|t| t.is_i32())
            }
            _ => false,
        };
        if !found {
            return Err(format!(
                "cell {cell}: the module does not export {name}{}; see the cell ABI",
                if params.len() == 1 {
                    "(i32) -> i32"
                } else {
                    "(i32, i32) -> i32"
                }
            ));
        }
    }
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err(format!(
            "cell {cell}: the module does not export its linear memory as `memory`"
        ));
    }
    Ok(())
}

fn check_import(
    cell: &str,
    import: &wasmtime::ImportType<'_>,
    caps: &CellCapabilities,
) -> Result<(), String> {
    let (module, name) = (import.module(), import.name());
    match module {
        "wasi_snapshot_preview1" => return Ok(()),
        "pulp" => {}
        other => {
            return Err(format!(
                "cell {cell} imports {other}.{name}: cells may import only from `pulp` and `wasi_snapshot_preview1`"
            ));
        }
    }
    let ExternType::Func(ty) = import.ty() else {
        return Err(format!(
            "cell {cell} imports pulp.{name} as a non-function; host imports are functions"
        ));
    };
    let Some(binding) = find_binding(caps, name) else {
        return Err(format!(
            "cell {cell} imports pulp.{name}, which no capability provides; check the name, or load the extension that provides it"
        ));
    };
    let (entry, params) = match binding {
        Binding::Real(e, i, _) | Binding::NotDeclared(e, i) => (e, e.handle.imports()[i].params()),
        Binding::Stub(e, i) => (e, e.handle.stub_imports()[i].params()),
    };
    if !same_signature(&ty, params) {
        return Err(format!(
            "cell {cell} imports pulp.{name} as {}, but capability {} provides it as {}",
            describe_type(&ty),
            entry.name(),
            signature(params)
        ));
    }
    Ok(())
}

fn define_imports(linker: &mut Linker<StoreData>, spec: &CellSpec) -> Result<(), String> {
    let (cell, caps) = (&*spec.name, &spec.capabilities);
    for import in spec.module.imports() {
        check_import(cell, &import, caps)?;
        if import.module() != "pulp" {
            continue;
        }
        let ExternType::Func(ty) = import.ty() else {
            unreachable!("checked above")
        };
        let name = import.name();
        let defined = match find_binding(caps, name).expect("checked above") {
            Binding::Real(entry, index, slot) => bind(
                linker,
                name,
                ty,
                Arc::clone(entry),
                index,
                Some((Arc::clone(&spec.states), slot)),
            ),
            Binding::Stub(entry, index) => bind(linker, name, ty, Arc::clone(entry), index, None),
            // SAFETY: writes one i32 result into the slot the signature check guaranteed.
            Binding::NotDeclared(..) => unsafe {
                linker.func_new_unchecked("pulp", name, ty, |_, values| {
                    values[0].write(ValRaw::i32(Code::NOT_DECLARED.raw()));
                    Ok(())
                })
            }
            .map(|_| ()),
        };
        defined.map_err(|e| format!("cell {cell}: linking pulp.{name}: {e}"))?;
    }
    Ok(())
}

fn bind(
    linker: &mut Linker<StoreData>,
    name: &str,
    ty: FuncType,
    entry: Arc<Entry>,
    index: usize,
    // The cell's states and this capability's slot; `None` binds a stub import.
    state: Option<(Arc<Vec<Arc<CellStateHandle>>>, usize)>,
) -> wasmtime::Result<()> {
    let stub = state.is_none();
    let labels = metrics::ImportLabels {
        capability: entry.name().to_owned(),
        import: name.to_owned(),
    };
    let calls = metrics::get().import_calls.get_or_create_owned(&labels);
    let params: Vec<ValType> = if stub {
        entry.handle.stub_imports()[index].params().to_vec()
    } else {
        entry.handle.imports()[index].params().to_vec()
    };
    let callback = move |mut caller: Caller<'_, StoreData>, values: &mut [MaybeUninit<ValRaw>]| {
        let mut args = [0u64; MAX_IMPORT_PARAMS];
        for (i, param) in params.iter().enumerate() {
            // SAFETY: wasmtime initialises one slot per parameter of the checked signature.
            let raw = unsafe { values[i].assume_init() };
            args[i] = match param {
                ValType::I32 => u64::from(raw.get_i32() as u32),
                ValType::I64 => raw.get_i64() as u64,
                ValType::F32 => u64::from(raw.get_f32()),
                ValType::F64 => raw.get_f64(),
            };
        }
        let import = if stub {
            &entry.handle.stub_imports()[index]
        } else {
            &entry.handle.imports()[index]
        };
        let state = match &state {
            Some((states, slot)) => states.get(*slot).map_or(&NO_STATE, |s| &**s),
            None => &NO_STATE,
        };
        let code = import.call(
            &mut CallerGuest {
                caller: &mut caller,
                state,
            },
            &args[..params.len()],
        );
        calls.inc();
        if code != 0 {
            let failed = metrics::ImportFailureLabels {
                capability: labels.capability.clone(),
                import: labels.import.clone(),
                code,
            };
            metrics::get().import_failures.get_or_create(&failed).inc();
        }
        values[0].write(ValRaw::i32(code));
        Ok(())
    };
    // SAFETY: the import's wasm type was checked against `params` and one i32 result.
    unsafe { linker.func_new_unchecked("pulp", name, ty, callback) }?;
    Ok(())
}

/// `pulp_on_call(name_ptr, name_len, args_ptr, args_len, resp_ptr_out, resp_len_out)`.
type OnCallParams = (i32, i32, i32, i32, i32, i32);

/// Why a served call has no result, the instance being fine.
#[derive(Debug)]
pub enum CallError {
    /// `pulp_on_call` returned this non-zero code.
    Returned(i32),
    /// The result's pointer and length are not inside linear memory, or it
    /// is over `max_message_bytes`.
    BadResult(String),
}

/// A running instance of a cell.
pub struct Instance {
    store: Store<StoreData>,
    runtime: Arc<Runtime>,
    step: TypedFunc<(i32, i32), i32>,
    on_call: Option<TypedFunc<OnCallParams, i32>>,
    shutdown: Option<TypedFunc<(), i32>>,
    free: Option<TypedFunc<(i32, i32), ()>>,
    /// The reused step envelope buffer: (pointer, capacity).
    envelope: Option<(u32, u32)>,
    calls: u64,
    timeout_ms: u64,
    steps: Counter,
    step_seconds: Histogram,
    memory_pages: Gauge,
    stdout: CellOutput,
    stderr: CellOutput,
}

fn classify(err: wasmtime::Error, timeout_ms: u64) -> Failure {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return Failure::Exit(exit.0);
    }
    if let Some(Trap::Interrupt) = err.downcast_ref::<Trap>() {
        if super::stop::stopping() {
            return Failure::Stopped;
        }
        return Failure::Timeout(timeout_ms);
    }
    let frame = err.downcast_ref::<WasmBacktrace>().and_then(|bt| {
        bt.frames()
            .first()
            .and_then(|f| f.func_name().map(str::to_owned))
    });
    let cause = err.root_cause().to_string();
    match frame {
        Some(func) => Failure::Trap(format!("{cause} (in {func})")),
        None => Failure::Trap(cause),
    }
}

impl Instance {
    /// Links, instantiates and initialises a cell: `_initialize`, then `pulp_init`.
    pub fn start(runtime: &Arc<Runtime>, spec: &CellSpec) -> Result<Instance, Failure> {
        let stdout = CellOutput::new(Arc::clone(&spec.name), "stdout");
        let stderr = CellOutput::new(Arc::clone(&spec.name), "stderr");
        let wasi = wasmtime_wasi::WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build_p1();
        // One memory and one instance: the memory size limit is the whole of
        // the cell's linear memory.
        let limits = StoreLimitsBuilder::new()
            .memory_size(spec.max_memory_pages as usize * 65_536)
            .memories(1)
            .tables(MAX_TABLES)
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(1)
            .build();
        let state = StoreData {
            wasi,
            limits,
            memory: None,
            alloc: None,
            name: Arc::clone(&spec.name),
            id: spec.id,
            max_message_bytes: spec.max_message_bytes,
            deadline: Instant::now(),
        };
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        // Checked at every epoch tick: the call's own deadline, and shutdown,
        // which must not wait for a runaway call's full timeout.
        store.epoch_deadline_callback(|ctx| {
            if super::stop::stopping() || Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });

        let mut linker: Linker<StoreData> = Linker::new(&runtime.engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| &mut s.wasi)
            .map_err(|e| Failure::Setup(format!("linking WASI: {e}")))?;
        define_imports(&mut linker, spec).map_err(Failure::Setup)?;

        let timeout_ms = spec.call_timeout_ms;
        store.data_mut().deadline = Instant::now() + Duration::from_millis(timeout_ms);
        store.set_epoch_deadline(1);
        let instance = {
            let _active = runtime.epoch.enter();
            linker.instantiate(&mut store, &spec.module).map_err(|e| {
                match classify(e, timeout_ms) {
                    Failure::Trap(t) => Failure::Setup(format!("instantiation failed: {t}")),
                    other => other,
                }
            })?
        };

        let missing = |what: &str| {
            Failure::Setup(format!(
                "the module does not export {what}; see the cell ABI"
            ))
        };
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| missing("`memory`"))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "pulp_alloc")
            .map_err(|_| missing("pulp_alloc(i32) -> i32"))?;
        let init = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "pulp_init")
            .map_err(|_| missing("pulp_init(i32, i32) -> i32"))?;
        let step = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "pulp_step")
            .map_err(|_| missing("pulp_step(i32, i32) -> i32"))?;
        let shutdown = instance
            .get_typed_func::<(), i32>(&mut store, "pulp_shutdown")
            .ok();
        let on_call = instance
            .get_typed_func::<OnCallParams, i32>(&mut store, "pulp_on_call")
            .ok();
        let free = instance
            .get_typed_func::<(i32, i32), ()>(&mut store, "pulp_free")
            .ok();
        let initialize = instance
            .get_typed_func::<(), ()>(&mut store, "_initialize")
            .ok();
        store.data_mut().memory = Some(memory);
        store.data_mut().alloc = Some(alloc);

        let mut this = Instance {
            store,
            runtime: Arc::clone(runtime),
            step,
            on_call,
            shutdown,
            free,
            envelope: None,
            calls: 0,
            timeout_ms,
            steps: metrics::get()
                .steps
                .get_or_create_owned(&metrics::cell(&spec.name)),
            step_seconds: metrics::get()
                .step_seconds
                .get_or_create_owned(&metrics::cell(&spec.name)),
            memory_pages: metrics::get()
                .memory_pages
                .get_or_create_owned(&metrics::cell(&spec.name)),
            stdout,
            stderr,
        };
        if let Some(initialize) = initialize {
            this.guarded(|store| initialize.call(store, ()))?;
        }
        let cfg = this.alloc_and_write(&spec.config)?;
        let code =
            this.guarded(|store| init.call(store, (cfg as i32, spec.config.len() as i32)))?;
        this.free_buffer(cfg, spec.config.len() as u32)?;
        if code != 0 {
            return Err(Failure::InitFailed(code));
        }
        Ok(this)
    }

    /// Runs one call into the cell with a fresh deadline, while the epoch clock runs.
    fn guarded<R>(
        &mut self,
        call: impl FnOnce(&mut Store<StoreData>) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        self.store.data_mut().deadline = Instant::now() + Duration::from_millis(self.timeout_ms);
        self.store.set_epoch_deadline(1);
        let epoch = Arc::clone(&self.runtime.epoch);
        let _active = epoch.enter();
        call(&mut self.store).map_err(|e| classify(e, self.timeout_ms))
    }

    fn alloc_and_write(&mut self, bytes: &[u8]) -> Result<u32, Failure> {
        let alloc = self.store.data().alloc.clone().expect("set at start");
        let len = bytes.len() as i32;
        let ptr = self.guarded(|store| alloc.call(store, len))?;
        if ptr == 0 {
            return Err(Failure::Setup(format!("pulp_alloc({len}) returned 0")));
        }
        let memory = self.store.data().memory.expect("set at start");
        memory
            .write(&mut self.store, ptr as u32 as usize, bytes)
            .map_err(|_| {
                Failure::Setup(format!(
                    "pulp_alloc({len}) returned {ptr}, outside linear memory"
                ))
            })?;
        Ok(ptr as u32)
    }

    fn free_buffer(&mut self, ptr: u32, len: u32) -> Result<(), Failure> {
        if let Some(free) = self.free.clone() {
            self.guarded(|store| free.call(store, (ptr as i32, len as i32)))?;
        }
        Ok(())
    }

    /// One step: a tick when `event` is `None`. Returns `pulp_step`'s result.
    pub fn step(&mut self, event: Option<(&str, &[u8])>) -> Result<i32, Failure> {
        let payload_len = event.map_or(0, |(kind, payload)| envelope::event_len(kind, payload));
        let total = envelope::HEADER_LEN + payload_len;
        let total32 = u32::try_from(total).map_err(|_| Failure::Setup("event too large".into()))?;
        let ptr = match self.envelope {
            Some((ptr, cap)) if cap >= total32 => ptr,
            old => {
                if let Some((ptr, cap)) = old {
                    self.envelope = None;
                    self.free_buffer(ptr, cap)?;
                }
                // Room to spare, so small events do not regrow the buffer.
                let cap = total32.max(4096);
                let ptr = self.alloc_sized(cap)?;
                self.envelope = Some((ptr, cap));
                ptr
            }
        };
        self.calls += 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let memory = self.store.data().memory.expect("set at start");
        let start = ptr as usize;
        let buf = memory
            .data_mut(&mut self.store)
            .get_mut(start..start + total)
            .ok_or_else(|| Failure::Setup("the envelope buffer is outside linear memory".into()))?;
        let header = Header {
            call: self.calls,
            time_ns: now,
            payload_len: payload_len as u32,
        };
        buf[..envelope::HEADER_LEN].copy_from_slice(&header.to_bytes());
        if let Some((kind, payload)) = event {
            envelope::write_event(&mut buf[envelope::HEADER_LEN..], kind, payload);
        }
        let step = self.step.clone();
        self.measured(|this| this.guarded(|store| step.call(store, (ptr as i32, total as i32))))
    }

    /// Runs `call`, a call of `pulp_step` or `pulp_on_call`, counted and timed.
    fn measured<R>(&mut self, call: impl FnOnce(&mut Self) -> R) -> R {
        let began = Instant::now();
        let result = call(self);
        self.steps.inc();
        self.step_seconds.observe(began.elapsed().as_secs_f64());
        if let Some(memory) = self.store.data().memory {
            let pages = i64::try_from(memory.size(&self.store)).unwrap_or(i64::MAX);
            self.memory_pages.set(pages);
        }
        result
    }

    fn alloc_sized(&mut self, size: u32) -> Result<u32, Failure> {
        let alloc = self.store.data().alloc.clone().expect("set at start");
        let ptr = self.guarded(|store| alloc.call(store, size as i32))?;
        let fits = self.store.data().memory.is_some_and(|m| {
            (ptr as u32 as usize).saturating_add(size as usize) <= m.data_size(&self.store)
        });
        if ptr == 0 || !fits {
            return Err(Failure::Setup(format!(
                "pulp_alloc({size}) for the step envelope returned {ptr}"
            )));
        }
        Ok(ptr as u32)
    }

    /// Serves a call from another cell through `pulp_on_call`, under this
    /// cell's call_timeout_ms; the result is copied out and its buffer freed.
    pub fn serve_call(
        &mut self,
        function: &str,
        args: &[u8],
    ) -> Result<Result<Vec<u8>, CallError>, Failure> {
        let Some(on_call) = self.on_call.clone() else {
            return Ok(Err(CallError::BadResult(
                "the module does not export pulp_on_call".into(),
            )));
        };
        let name = self.write_input(function.as_bytes())?;
        let input = self.write_input(args)?;
        let slots = self.alloc_and_write(&[0; 8])?;
        self.calls += 1;
        let params = (
            name as i32,
            function.len() as i32,
            input as i32,
            args.len() as i32,
            slots as i32,
            slots as i32 + 4,
        );
        let code = self.measured(|this| this.guarded(|store| on_call.call(store, params)))?;
        let memory = self.store.data().memory.expect("set at start");
        let mut out = [0u8; 8];
        memory
            .read(&self.store, slots as usize, &mut out)
            .map_err(|_| Failure::Setup("the call's out-slots left linear memory".into()))?;
        let ptr = u32::from_le_bytes(out[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(out[4..].try_into().expect("4 bytes"));
        let result = if code != 0 {
            Err(CallError::Returned(code))
        } else if u64::from(len) > self.store.data().max_message_bytes {
            Err(CallError::BadResult(format!(
                "a {len}-byte result is over max_message_bytes"
            )))
        } else {
            let start = ptr as usize;
            memory
                .data(&self.store)
                .get(start..start + len as usize)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| {
                    CallError::BadResult(format!(
                        "the result ({len} bytes at {ptr}) is outside linear memory"
                    ))
                })
        };
        // The result buffer is the cell's to free only when it is one.
        let handed_over = if result.is_ok() { (ptr, len) } else { (0, 0) };
        for (ptr, len) in [
            (name, function.len() as u32),
            (input, args.len() as u32),
            (slots, 8),
            handed_over,
        ] {
            if ptr != 0 && len != 0 {
                self.free_buffer(ptr, len)?;
            }
        }
        Ok(result)
    }

    /// `bytes` in a fresh buffer of the cell; pointer 0 for none.
    fn write_input(&mut self, bytes: &[u8]) -> Result<u32, Failure> {
        if bytes.is_empty() {
            return Ok(0);
        }
        self.alloc_and_write(bytes)
    }

    /// `pulp_shutdown`, if exported.
    pub fn shutdown(&mut self) -> Result<i32, Failure> {
        match self.shutdown.clone() {
            Some(shutdown) => self.guarded(|store| shutdown.call(store, ())),
            None => Ok(0),
        }
    }

    pub fn calls(&self) -> u64 {
        self.calls
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stdout.flush_partial();
        self.stderr.flush_partial();
    }
}
