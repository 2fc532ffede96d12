//! Segment event → Amplitude requests: the field mapping.
//!
//! [`map_event`] turns one Segment event into the [`Part`]s to send: events
//! for `/2/httpapi`, group identifications for `/groupidentify`, user
//! mappings for `/usermap`. An event that cannot be sent is rejected here
//! with a reason, before any request.
//!
//! The event is read once through the SDK's borrowed [`EventView`] and each
//! part is written straight into its JSON text: no `serde_json::Value` tree
//! is built on the way, and objects Amplitude takes as they are
//! (`properties`, `traits`, `groups`) are copied member by member.

use std::borrow::Cow;

use switchyard_plugin_sdk::json::{Json, Kind, Object, ObjectWriter};
use switchyard_plugin_sdk::{Event, EventType, EventView, spec};

use crate::settings::Config;

/// One request item made from a Segment event, as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// An Amplitude event for `/2/httpapi`.
    Event(String),
    /// One `identification` object for `/groupidentify`.
    GroupIdentify(String),
    /// One `mapping` object for `/usermap`.
    UserMap(String),
}

/// The reason for a local rejection when an event has no id at all.
pub const MISSING_IDS: &str = "missing userId and anonymousId/device id: Amplitude needs a user_id or a device_id";

/// Maps `event` to its parts (none for an alias when `alias_usermap` is off).
///
/// # Errors
///
/// The rejection reason when the event cannot be sent to Amplitude: no
/// usable id, an id shorter than the minimum length, a track without a
/// name, a group without a group value, an alias without both ids.
pub fn map_event(event: &Event, config: &Config) -> Result<Vec<Part>, String> {
    let view = event.view()?;
    match view.kind() {
        EventType::Track => {
            let name = view.event_name().unwrap_or_default();
            let name = name.trim();
            if name.is_empty() {
                return Err("track has no `event` name: Amplitude requires an event_type".into());
            }
            let base = Base::new(&view, config)?;
            Ok(track(&base, name, &view.properties(), config))
        }
        EventType::Page => {
            let base = Base::new(&view, config)?;
            let event_type = viewed(view.name().as_deref(), "Loaded a Page");
            let props = view.properties();
            let page = base.ctx.object("page");
            let added: Vec<(&str, Cow<'_, str>)> = ["url", "path", "referrer", "title", "search"]
                .into_iter()
                .filter(|key| !props.contains_key(key))
                .filter_map(|key| Some((key, page.text(key)?)))
                .collect();
            let mut out = Vec::with_capacity(512);
            {
                let mut o = base.start(&mut out, &event_type, None, Some(&props));
                event_properties(&mut o, &props, &added);
                base.context_traits(&mut o);
                base.groups(&mut o, Some(&props));
            }
            Ok(vec![Part::Event(text(out))])
        }
        EventType::Screen => {
            let base = Base::new(&view, config)?;
            let event_type = viewed(view.name().as_deref(), "Loaded a Screen");
            let props = view.properties();
            Ok(vec![Part::Event(base.view_or_track(&event_type, &props))])
        }
        EventType::Identify => {
            let base = Base::new(&view, config)?;
            let traits = view.traits();
            let mut out = Vec::with_capacity(512);
            {
                let mut o = base.start(&mut out, "$identify", None, None);
                if !traits.is_empty() {
                    o.object("user_properties").object("$set").members(&traits);
                }
                base.groups(&mut o, None);
            }
            Ok(vec![Part::Event(text(out))])
        }
        EventType::Group => {
            let base = Base::new(&view, config)?;
            group(&base, &view, config)
        }
        EventType::Alias => {
            if !config.alias_usermap {
                return Ok(Vec::new());
            }
            let previous = view.previous_id().filter(|s| !s.is_empty()).ok_or("alias has no `previousId`")?;
            let user = view.user_id().filter(|s| !s.is_empty()).ok_or("alias has no `userId`")?;
            let mut out = Vec::with_capacity(64);
            ObjectWriter::new(&mut out).str("global_user_id", &user).str("user_id", &previous);
            Ok(vec![Part::UserMap(text(out))])
        }
    }
}

/// The writers' bytes as text (they write UTF-8 only).
fn text(out: Vec<u8>) -> String {
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `Viewed {name}`, or `fallback` for an unnamed page or screen.
fn viewed(name: Option<&str>, fallback: &str) -> String {
    match name.map(str::trim) {
        Some(n) if !n.is_empty() => format!("Viewed {n}"),
        _ => fallback.to_owned(),
    }
}

/// `event_properties`: `props` and then `added` (keys `props` lacks), when
/// there is any.
fn event_properties(o: &mut ObjectWriter<'_>, props: &Object<'_>, added: &[(&str, Cow<'_, str>)]) {
    if props.is_empty() && added.is_empty() {
        return;
    }
    let mut p = o.object("event_properties");
    p.members(props);
    for (key, value) in added {
        p.str(key, value);
    }
}

/// A context field Amplitude takes as a string.
type Field<'a> = (&'static str, Cow<'a, str>);

/// What every Amplitude event of one Segment event shares.
struct Base<'a> {
    view: &'a EventView<'a>,
    ctx: Object<'a>,
    user_id: Option<Cow<'a, str>>,
    device_id: Option<Cow<'a, str>>,
    /// The string fields from `context`, non-empty, in Amplitude's names.
    fields: Vec<Field<'a>>,
    /// `location_lat`, `location_lng`.
    location: [Option<f64>; 2],
    integrations: Object<'a>,
}

impl<'a> Base<'a> {
    /// The shared fields: ids (checked), time, insert_id and the context.
    fn new(view: &'a EventView<'a>, config: &Config) -> Result<Self, String> {
        let ctx = view.context();
        let device = ctx.object("device");
        let user_id = view.user_id().filter(|s| !s.is_empty());
        let (device_id, device_source) = match device.non_empty("id") {
            Some(id) => (Some(id), "context.device.id"),
            None => (view.anonymous_id().filter(|s| !s.is_empty()), "anonymousId"),
        };
        if user_id.is_none() && device_id.is_none() {
            return Err(MISSING_IDS.into());
        }
        let min = config.effective_min_id_length();
        for (id, what) in [(&user_id, "userId"), (&device_id, device_source)] {
            if let Some(id) = id {
                let n = id.chars().count();
                if n < min {
                    return Err(format!(
                        "{what} is {n} characters long, shorter than Amplitude's minimum id length of {min} \
                         (raise or lower it with the min_id_length setting)"
                    ));
                }
            }
        }
        let location = ctx.object("location");
        let fields = context_fields(&ctx, &device, &location);
        Ok(Base {
            view,
            user_id,
            device_id,
            fields,
            location: [location.f64("latitude"), location.f64("longitude")],
            integrations: view.integrations(),
            ctx,
        })
    }

    /// Starts an Amplitude event of `event_type` with the shared fields and
    /// the session id (from the integrations, the context, else `props`).
    /// `insert_id` overrides the message id.
    fn start<'o>(
        &self,
        out: &'o mut Vec<u8>,
        event_type: &str,
        insert_id: Option<&str>,
        props: Option<&Object<'_>>,
    ) -> ObjectWriter<'o> {
        let mut o = ObjectWriter::new(out);
        o.str("event_type", event_type);
        if let Some(id) = &self.user_id {
            o.str("user_id", id);
        }
        if let Some(id) = &self.device_id {
            o.str("device_id", id);
        }
        o.i64("time", self.view.timestamp_ms());
        o.str("insert_id", insert_id.unwrap_or(self.view.message_id()));
        for (key, value) in &self.fields {
            o.str(key, value);
        }
        for (key, value) in [("location_lat", self.location[0]), ("location_lng", self.location[1])] {
            if let Some(n) = value {
                o.f64(key, n);
            }
        }
        if let Some(id) = session_id(&self.integrations, &self.ctx, props) {
            o.i64("session_id", id);
        }
        o
    }

    /// `user_properties`: `context.traits` as `$set`, when there are any.
    fn context_traits(&self, o: &mut ObjectWriter<'_>) {
        let traits = self.ctx.object("traits");
        if !traits.is_empty() {
            o.object("user_properties").object("$set").members(&traits);
        }
    }

    /// `groups`: `context.groups` merged with `props.groups` (the latter
    /// wins), when either is a non-empty object.
    fn groups(&self, o: &mut ObjectWriter<'_>, props: Option<&Object<'_>>) {
        let from_context = self.ctx.object("groups");
        let from_props = props.map(|p| p.object("groups")).unwrap_or_default();
        if from_context.is_empty() && from_props.is_empty() {
            return;
        }
        let mut g = o.object("groups");
        for (key, value) in from_context.iter().filter(|(k, _)| !from_props.contains_key(k)) {
            g.json(&key, value);
        }
        g.members(&from_props);
    }

    /// A screen (or plain track) event: properties, context traits, groups.
    fn view_or_track(&self, event_type: &str, props: &Object<'_>) -> String {
        let mut out = Vec::with_capacity(512);
        {
            let mut o = self.start(&mut out, event_type, None, Some(props));
            event_properties(&mut o, props, &[]);
            self.context_traits(&mut o);
            self.groups(&mut o, Some(props));
        }
        text(out)
    }
}

/// The device, location, app and library fields of `context`, non-empty.
fn context_fields<'a>(ctx: &Object<'a>, device: &Object<'a>, location: &Object<'a>) -> Vec<Field<'a>> {
    let mut fields: Vec<Field<'a>> = Vec::with_capacity(16);
    let mut put = |key: &'static str, value: Option<Cow<'a, str>>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            fields.push((key, v));
        }
    };
    let os = ctx.object("os");
    let library = ctx.object("library");
    let device_type = device.non_empty("type");
    put("ip", ctx.text("ip"));
    put("app_version", ctx.object("app").text("version"));
    put("platform", platform(device_type.as_deref(), ctx.non_empty("userAgent").is_some()));
    put("os_name", os.text("name"));
    put("os_version", os.text("version"));
    let brand = device.get("brand").filter(|v| v.kind() == Kind::String).and_then(Json::str);
    put("device_brand", brand.or_else(|| device.text("manufacturer")));
    put("device_manufacturer", device.text("manufacturer"));
    put("device_model", device.text("model"));
    put("carrier", ctx.object("network").text("carrier"));
    put("country", location.text("country"));
    put("region", location.text("region"));
    put("city", location.text("city"));
    put("language", ctx.text("locale"));
    let library = match (library.non_empty("name"), library.non_empty("version")) {
        (Some(name), Some(version)) => Some(Cow::Owned(format!("{name}/{version}"))),
        (Some(name), None) => Some(name),
        _ => None,
    };
    put("library", library);
    let ad_tracking_off = device.bool("adTrackingEnabled") == Some(false);
    match os_family(os.non_empty("name").or(device_type).as_deref()) {
        Some(OsFamily::Ios) => {
            if !ad_tracking_off {
                put("idfa", device.text("advertisingId"));
            }
            put("idfv", device.text("id"));
        }
        Some(OsFamily::Android) if !ad_tracking_off => put("adid", device.text("advertisingId")),
        _ => {}
    }
    fields
}

/// Amplitude's `platform`: `context.device.type` (`ios` → `iOS`, `android`
/// → `Android`, others as sent), else `Web` when the event has a
/// `context.userAgent` (a browser sent it).
fn platform<'a>(device_type: Option<&str>, has_user_agent: bool) -> Option<Cow<'a, str>> {
    match device_type {
        Some(kind) => Some(Cow::Owned(match kind.to_ascii_lowercase().as_str() {
            "ios" => "iOS".to_owned(),
            "android" => "Android".to_owned(),
            "web" | "browser" => "Web".to_owned(),
            _ => kind.to_owned(),
        })),
        None => has_user_agent.then_some(Cow::Borrowed("Web")),
    }
}

enum OsFamily {
    Ios,
    Android,
}

/// iOS or Android, from `context.os.name`, else `context.device.type`.
fn os_family(name: Option<&str>) -> Option<OsFamily> {
    let name = name?.to_ascii_lowercase();
    if name.contains("ios") || name.contains("iphone") || name.contains("ipados") {
        Some(OsFamily::Ios)
    } else if name.contains("android") {
        Some(OsFamily::Android)
    } else {
        None
    }
}

/// The session id in ms: `integrations.Amplitude.session_id` (or
/// `integrations["Actions Amplitude"].session_id`), else
/// `context.session_id`, else `properties.session_id`. A number, a numeric
/// string or an ISO timestamp; negative means none (`-1`).
fn session_id(integrations: &Object<'_>, ctx: &Object<'_>, props: Option<&Object<'_>>) -> Option<i64> {
    let present = |v: &Json<'_>| !v.is_null();
    let value = ["Amplitude", "Actions Amplitude"]
        .iter()
        .find_map(|k| integrations.object(k).get("session_id").filter(present))
        .or_else(|| ctx.get("session_id").filter(present))
        .or_else(|| props.and_then(|p| p.get("session_id")).filter(present))?;
    let ms = match value.kind() {
        Kind::Number => value.raw().parse::<i64>().ok().or_else(|| value.f64().map(|f| f as i64))?,
        Kind::String => {
            let s = value.str()?;
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| spec::parse_timestamp_ms(s))?
        }
        _ => return None,
    };
    Some(if ms < 0 { -1 } else { ms })
}

/// Writes `key` as a JSON number: a JSON number as sent, a numeric string
/// as its value. Returns whether it wrote one.
fn put_number(o: &mut ObjectWriter<'_>, key: &str, v: Option<Json<'_>>) -> bool {
    match v {
        Some(n) if n.kind() == Kind::Number => {
            o.json(key, n);
            true
        }
        other => match other.and_then(Json::f64) {
            Some(f) => {
                o.f64(key, f);
                true
            }
            None => false,
        },
    }
}

/// A string from the first of `keys` that is a non-empty string or a number.
fn first_text<'a>(props: &Object<'a>, keys: &[&str]) -> Option<Cow<'a, str>> {
    keys.iter().find_map(|k| {
        let v = props.get(k)?;
        match v.kind() {
            Kind::String => v.str().filter(|s| !s.is_empty()),
            Kind::Number => Some(Cow::Borrowed(v.raw())),
            _ => None,
        }
    })
}

/// A track: the event itself plus, with `track_products`, one `Product
/// Purchased` event per object of `properties.products`.
///
/// Revenue is counted once, on the order or on its products, never on both
/// (Segment's Amplitude "Log Purchase", whose *Track Revenue Per Product*
/// is off by default):
///
/// - By default the track carries the order's revenue fields: `revenue`
///   (`properties.revenue`, else `properties.total` for `Order Completed`),
///   `price`, `quantity`, `productId` and `revenueType` (default `Purchase`
///   when a revenue or price is sent). The product events carry none of
///   them (a product's `price` stays in its `event_properties`, which are
///   not revenue fields).
/// - With `track_revenue_per_product`, when product events are emitted and
///   at least one product has a `price`, the product events carry the
///   revenue fields (see [`product_revenue`]) and the track none of them.
///   When no product has a price the track keeps its revenue fields as by
///   default.
///
/// Where Segment differs or is silent: with per-product revenue Segment
/// takes revenue off the order whenever it has products, priced or not;
/// here an order whose products have no price keeps its revenue, so it is
/// not lost. By default product prices are not added up into the order's
/// revenue (nor are they in Segment): an order without `revenue` (or
/// `total`) counts none. The `total` fallback is this plugin's; Segment's
/// mapping reads `properties.revenue` only.
fn track(base: &Base<'_>, name: &str, props: &Object<'_>, config: &Config) -> Vec<Part> {
    let products: Vec<(usize, Object<'_>)> = if config.track_products {
        props
            .get("products")
            .and_then(Json::array)
            .map(|a| a.into_iter().enumerate().filter_map(|(i, p)| Some((i, p.object()?))).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let per_product = config.track_revenue_per_product && products.iter().any(|(_, p)| p.f64("price").is_some());
    let order_revenue_type = first_text(props, &["revenueType", "revenue_type"]);
    let mut out = Vec::with_capacity(512);
    {
        let mut o = base.start(&mut out, name, None, Some(props));
        event_properties(&mut o, props, &[]);
        base.context_traits(&mut o);
        base.groups(&mut o, Some(props));
        if !per_product {
            let revenue = match props.get("revenue").filter(|v| v.f64().is_some()) {
                None if name == "Order Completed" => props.get("total"),
                revenue => revenue,
            };
            let has_revenue = put_number(&mut o, "revenue", revenue) | put_number(&mut o, "price", props.get("price"));
            if let Some(q) = quantity(props) {
                o.i64("quantity", q);
            }
            if let Some(id) = first_text(props, &["productId", "product_id", "sku"]) {
                o.str("productId", &id);
            }
            if has_revenue {
                o.str("revenueType", order_revenue_type.as_deref().unwrap_or("Purchase"));
            }
        }
    }
    let mut parts = vec![Part::Event(text(out))];
    for (i, product) in products {
        let insert_id = format!("{}-product-{i}", base.view.message_id());
        let mut out = Vec::with_capacity(512);
        {
            let mut o = base.start(&mut out, "Product Purchased", Some(&insert_id), Some(&product));
            event_properties(&mut o, &product, &[]);
            base.context_traits(&mut o);
            base.groups(&mut o, Some(props));
            if config.track_revenue_per_product {
                product_revenue(&mut o, &product, order_revenue_type.as_deref());
            }
        }
        parts.push(Part::Event(text(out)));
    }
    parts
}

/// Adds a product's revenue fields to its `Product Purchased` event (with
/// `track_revenue_per_product` only): `price`, `quantity` (default 1 when
/// a price is set), `productId` (`product_id`, `productId`, `sku` or `id`)
/// and `revenueType` (the product's, else the order's, else `Purchase`).
fn product_revenue(o: &mut ObjectWriter<'_>, product: &Object<'_>, order_revenue_type: Option<&str>) {
    if put_number(o, "price", product.get("price")) {
        o.i64("quantity", quantity(product).unwrap_or(1));
    } else if let Some(q) = quantity(product) {
        o.i64("quantity", q);
    }
    if let Some(id) = first_text(product, &["product_id", "productId", "sku", "id"]) {
        o.str("productId", &id);
    }
    let kind = first_text(product, &["revenueType", "revenue_type"]);
    o.str("revenueType", kind.as_deref().or(order_revenue_type).unwrap_or("Purchase"));
}

/// `quantity` as the integer Amplitude requires (rounded).
fn quantity(props: &Object<'_>) -> Option<i64> {
    props.f64("quantity").map(|q| q.round() as i64)
}

/// A scalar trait as a string (group types and values are strings).
fn trait_text<'a>(traits: &Object<'a>, key: Option<&str>) -> Option<Cow<'a, str>> {
    let v = traits.get(key?)?;
    match v.kind() {
        Kind::String => v.str().filter(|s| !s.trim().is_empty()),
        Kind::Number | Kind::Bool => Some(Cow::Borrowed(v.raw())),
        _ => None,
    }
}

/// A group: the group's properties for `/groupidentify` and a `$identify`
/// that puts the user in the group.
fn group(base: &Base<'_>, view: &EventView<'_>, config: &Config) -> Result<Vec<Part>, String> {
    let traits = view.traits();
    let group_type = trait_text(&traits, config.group_type_trait.as_deref())
        .unwrap_or(Cow::Borrowed(config.default_group_type.as_str()));
    let group_value = trait_text(&traits, config.group_value_trait.as_deref())
        .or_else(|| view.group_id().filter(|s| !s.is_empty()))
        .ok_or("group has no `groupId` (and no group value trait): Amplitude needs a group value")?;
    let mut identification = Vec::with_capacity(256);
    {
        let mut o = ObjectWriter::new(&mut identification);
        o.object("group_properties").members(&traits);
        o.str("group_type", &group_type).str("group_value", &group_value);
    }
    let mut identify = Vec::with_capacity(512);
    {
        let mut o = base.start(&mut identify, "$identify", None, None);
        o.object("groups").str(&group_type, &group_value);
    }
    Ok(vec![Part::GroupIdentify(text(identification)), Part::Event(text(identify))])
}
